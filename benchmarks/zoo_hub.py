r"""PreCrop over the keras_hub image families: cost, achieved ratios, plan and crop time (sibling of zoo.py).

keras_hub presets cannot be downloaded here, so every backbone is built from constructor arguments that
follow its best-known preset's architecture (ResNet-50, CSPResNet-50-like, MobileNetV3-Small, EfficientNet-B0,
EfficientNetV2-B0, DenseNet-121, VGG-16, DeepLabV3 on ResNet-50, an ImageClassifier on MobileNetV3) at a
modest input size (--image_size, default 96). For each: the same columns as zoo.md (dense MACs and params,
achieved ratios of `plan(flops=0.5)` and `plan(params=0.5)`, plan and crop time, exactness checks), plus
*layers = plan* (every layer's recounted MACs and params equal the plan's) and *structure kept* (the cropped
model has the same operations, and every composite block that added its input still does, and no other).

Writes benchmarks/results/zoo_hub.{json,csv,md}.

Usage (from the repository root):
    python -m benchmarks.zoo_hub
    python -m benchmarks.zoo_hub --models=mobilenet_v3_small,efficientnet_v2_b0
    python -m benchmarks.zoo_hub --summarize_only
"""

import csv
import gc
import json
import os
import statistics
import time

from absl import app, flags

from benchmarks import zoo

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 96, "Input size (NxNx3) of every keras_hub model.")

CSV_COLUMNS = (zoo.CSV_COLUMNS[:-3] + ["count_s", "count_cpu_s", "layers_match", "structure_kept", "residual_blocks"]
               + zoo.CSV_COLUMNS[-3:])


def _families():
    import keras_hub  # pylint: disable=g-import-not-at-top

    h = keras_hub.models
    shape = (FLAGS.image_size, FLAGS.image_size, 3)

    def resnet50(pre_activation=False):
        return h.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[7],
                                stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
                                stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
                                use_pre_activation=pre_activation, image_shape=shape)

    def cspnet():
        return h.CSPNetBackbone(stem_filters=32, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 2, 2, 1],
                                stackwise_strides=[1, 2, 2, 2], stackwise_num_filters=[64, 128, 256, 512],
                                block_type="bottleneck_block", stage_type="csp", bottle_ratio=[0.5],
                                block_ratio=[1.0], expand_ratio=[2.0], image_shape=shape)

    def mobilenet_v3_small():
        return h.MobileNetBackbone(
            stackwise_expansion=[[72, 88], [96, 240, 240], [120, 144], [288, 576, 576]],
            stackwise_num_blocks=[2, 3, 2, 3],
            stackwise_num_filters=[[24, 24], [40, 40, 40], [48, 48], [96, 96, 96]],
            stackwise_kernel_size=[[3, 3], [5, 5, 5], [5, 5], [5, 5, 5]],
            stackwise_num_strides=[[2, 1], [2, 1, 1], [1, 1], [2, 1, 1]],
            stackwise_se_ratio=[[None, None], [0.25, 0.25, 0.25], [0.25, 0.25], [0.25, 0.25, 0.25]],
            stackwise_activation=[["relu", "relu"], ["hard_swish"] * 3, ["hard_swish"] * 2, ["hard_swish"] * 3],
            stackwise_padding=[[1, 1], [2, 2, 2], [2, 2], [2, 2, 2]],
            output_num_filters=1024, depthwise_filters=16, depthwise_stride=2, depthwise_residual=False,
            last_layer_filter=576, squeeze_and_excite=0.5, image_shape=shape, input_num_filters=16)

    def efficientnet_b0():
        return h.EfficientNetBackbone(
            width_coefficient=1.0, depth_coefficient=1.0, stackwise_kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
            stackwise_num_repeats=[1, 2, 2, 3, 3, 4, 1], stackwise_input_filters=[32, 16, 24, 40, 80, 112, 192],
            stackwise_output_filters=[16, 24, 40, 80, 112, 192, 320], stackwise_expansion_ratios=[1, 6, 6, 6, 6, 6, 6],
            stackwise_squeeze_and_excite_ratios=[0.25] * 7, stackwise_strides=[1, 2, 2, 2, 1, 2, 1],
            stackwise_block_types=["v1"] * 7, input_shape=shape)

    def efficientnet_v2_b0():
        return h.EfficientNetBackbone(
            width_coefficient=1.0, depth_coefficient=1.0, stackwise_kernel_sizes=[3] * 6,
            stackwise_num_repeats=[1, 2, 2, 3, 5, 8], stackwise_input_filters=[32, 16, 32, 48, 96, 112],
            stackwise_output_filters=[16, 32, 48, 96, 112, 192], stackwise_expansion_ratios=[1, 4, 4, 4, 6, 6],
            stackwise_squeeze_and_excite_ratios=[0, 0, 0, 0.25, 0.25, 0.25], stackwise_strides=[1, 2, 2, 2, 1, 2],
            stackwise_block_types=["fused"] * 3 + ["unfused"] * 3, include_stem_padding=False, input_shape=shape)

    def densenet121():
        return h.DenseNetBackbone(stackwise_num_repeats=[6, 12, 24, 16], image_shape=shape)

    def vgg16():
        return h.VGGBackbone(stackwise_num_repeats=[2, 2, 3, 3, 3], stackwise_num_filters=[64, 128, 256, 512, 512],
                             image_shape=shape)

    def deeplab_v3_resnet50():
        return h.DeepLabV3Backbone(image_encoder=resnet50(), spatial_pyramid_pooling_key="P4", upsampling_size=4,
                                   dilation_rates=[6, 12, 18], low_level_feature_key="P2", image_shape=shape)

    def image_classifier_mobilenet_v3():
        return h.ImageClassifier(backbone=mobilenet_v3_small(), num_classes=1000)

    return {
        "resnet50_v1": resnet50, "resnet50_v2": lambda: resnet50(pre_activation=True), "cspnet": cspnet,
        "mobilenet_v3_small": mobilenet_v3_small, "efficientnet_b0": efficientnet_b0,
        "efficientnet_v2_b0": efficientnet_v2_b0, "densenet121": densenet121, "vgg16": vgg16,
        "deeplab_v3_resnet50": deeplab_v3_resnet50, "image_classifier_mobilenet_v3": image_classifier_mobilenet_v3,
    }


def structure(model):
    import keras  # pylint: disable=g-import-not-at-top

    from tf_precrop.graph.keras_hub_rules import adds_residual  # pylint: disable=g-import-not-at-top

    rows = []
    for op in model.operations:
        rows.extend(structure(op) if isinstance(op, keras.Model) else [(type(op).__name__, op.name, adds_residual(op))])
    return rows


def run_model(name, builder):
    """All measurements for one model; errors are recorded, never raised."""
    import keras  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top

    import tf_precrop  # pylint: disable=g-import-not-at-top

    row = {"model": name, "load1": round(os.getloadavg()[0], 2)}
    errors = []
    model = small = None
    try:
        model, row["build_s"], row["build_cpu_s"] = zoo._timed_cpu(builder)  # pylint: disable=protected-access
        shape = tuple(model.input_shape[1:])
        row["input"] = "x".join(map(str, shape))
        dense, row["count_s"], row["count_cpu_s"] = zoo._timed_cpu(lambda: tf_precrop.count(model))  # pylint: disable=protected-access
        row["dense_macs"], row["dense_params"] = dense.macs, dense.params
        row["params_check_dense"] = dense.params == model.count_params()
        times, cpu_times, fplan = [], [], None
        for _ in range(FLAGS.repeats):
            fplan, seconds, cpu = zoo._timed_cpu(lambda: tf_precrop.plan(model, flops=FLAGS.flops))  # pylint: disable=protected-access,cell-var-from-loop
            times.append(seconds)
            cpu_times.append(cpu)
        row.update(f_macs_ratio=fplan.macs_ratio, f_params_ratio=fplan.params_ratio,
                   f_plan_s=statistics.median(times), f_plan_times=times, f_plan_cpu_s=statistics.median(cpu_times),
                   f_solve_s=fplan.solve_seconds, f_round_s=fplan.round_seconds, groups=len(fplan.groups),
                   free_groups=sum(1 for g in fplan.groups if g.fixed is None),
                   layers=sum(1 for lp in fplan.layers if lp.sets_width))
        try:
            pplan, row["p_plan_s"] = zoo._timed(lambda: tf_precrop.plan(model, params=FLAGS.params))  # pylint: disable=protected-access
            row.update(p_macs_ratio=pplan.macs_ratio, p_params_ratio=pplan.params_ratio)
        except Exception as err:  # noqa: BLE001  (a benchmark records every failure and goes on)
            errors.append(f"plan(params={FLAGS.params}): {type(err).__name__}: {err}")
        small, row["crop_s"], row["crop_cpu_s"] = zoo._timed_cpu(lambda: tf_precrop.crop(model, fplan))  # pylint: disable=protected-access
        recount = tf_precrop.count(small)
        row["cropped_params"] = small.count_params()
        row["params_match"] = small.count_params() == fplan.params
        row["macs_match"] = recount.macs == fplan.macs
        row["layers_match"] = ({lc.name: (lc.macs, lc.params) for lc in recount.layers}
                               == {lp.name: (lp.macs, lp.params) for lp in fplan.layers})
        before, after = structure(model), structure(small)
        row["structure_kept"] = before == after
        row["residual_blocks"] = (f"{sum(1 for r in before if r[2])} -> {sum(1 for r in after if r[2])}"
                                  if any(r[2] is not None for r in before) else None)
        x = np.zeros((1, *shape), dtype="float32")
        y, row["forward_s"] = zoo._timed(lambda: small(x, training=False))  # pylint: disable=protected-access
        ys = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(y)]
        ref = keras.tree.flatten(model(x, training=False))
        row["forward_ok"] = all(a.shape == tuple(b.shape) and np.isfinite(a).all() for a, b in zip(ys, ref))
    except Exception as err:  # noqa: BLE001  (a benchmark records every failure and goes on)
        errors.append(f"{type(err).__name__}: {str(err)[:500]}")
    finally:
        model = small = None  # free them before the next model
        keras.backend.clear_session()
        gc.collect()
    row["error"] = "; ".join(errors) or None
    return row


def write_summary(data, out_dir):
    from tf_precrop import report  # pylint: disable=g-import-not-at-top

    rows, machine, settings = data["rows"], data["machine"], data["settings"]
    with open(os.path.join(out_dir, "zoo_hub.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in CSV_COLUMNS})
    f_, p_ = settings["flops"], settings["params"]
    fmt = zoo._fmt  # pylint: disable=protected-access
    table = [{
        "model": r["model"], "input": r.get("input"),
        "width layers / groups (free)": (f"{r['layers']} / {r['groups']} ({r['free_groups']})" if "groups" in r
                                         else None),
        "dense GMACs": fmt(r.get("dense_macs") and r["dense_macs"] / 1e9, ".3f"),
        "dense Mparams": fmt(r.get("dense_params") and r["dense_params"] / 1e6, ".2f"),
        f"flops={f_:g}: MACs x": fmt(r.get("f_macs_ratio"), ".4f"),
        f"flops={f_:g}: params x": fmt(r.get("f_params_ratio"), ".4f"),
        f"params={p_:g}: MACs x": fmt(r.get("p_macs_ratio"), ".4f"),
        f"params={p_:g}: params x": fmt(r.get("p_params_ratio"), ".4f"),
        "count s (CPU)": f"{r['count_s']:.2f} ({r['count_cpu_s']:.2f})" if "count_s" in r else None,
        "plan s (median; solve)": f"{r['f_plan_s']:.2f} ({r['f_solve_s']:.2f})" if "f_plan_s" in r else None,
        f"plan s params={p_:g}": fmt(r.get("p_plan_s"), ".2f"),
        "crop s (CPU)": f"{r['crop_s']:.2f} ({r['crop_cpu_s']:.2f})" if "crop_cpu_s" in r else None,
        "build s (CPU)": f"{r['build_s']:.2f} ({r['build_cpu_s']:.2f})" if "build_cpu_s" in r else None,
        "params = plan": r.get("params_match"), "MACs = plan": r.get("macs_match"),
        "layers = plan": r.get("layers_match"), "structure kept": r.get("structure_kept"),
        "residual blocks": r.get("residual_blocks"), "forward": r.get("forward_ok"), "load1": r.get("load1"),
        "error / note": r.get("error"),
    } for r in rows]
    ok = [r for r in rows if not r.get("error")]
    exact = [r for r in rows if r.get("layers_match") and r.get("params_match") and r.get("macs_match")]
    kept = [r for r in rows if r.get("structure_kept")]
    f_dev = [abs(r["f_macs_ratio"] - f_) for r in rows if "f_macs_ratio" in r]
    p_dev = [abs(r["p_params_ratio"] - p_) for r in rows if "p_params_ratio" in r]
    run_time = f" ({machine['run_seconds']:.0f} s)" if machine.get("run_seconds") else ""
    lines = [
        "# PreCrop over the keras_hub image families",
        "",
        ("Generated by `python -m benchmarks.zoo_hub` (benchmarks/zoo_hub.py); data in zoo_hub.json / zoo_hub.csv. "
         "Same columns as [zoo.md](zoo.md), plus *layers = plan* (every layer's recounted MACs and params equal "
         "the plan's), *structure kept* (same operations; every composite block that added its input still "
         "does, no other does) and *residual blocks* (composite blocks adding their input, dense -> cropped)."),
        (f"keras_hub presets cannot be downloaded here: every model is built from constructor arguments after its "
         f"best-known preset's architecture (see the script), with random weights, at {settings['image_size']}x"
         f"{settings['image_size']}x3. `plan(model, flops={f_:g})`, `plan(model, params={p_:g})`, defaults "
         "round_to=1, max_ratio=1; *crop s* is `tf_precrop.crop(model, plan)` of the flops plan (it re-walks "
         "the model to check the plan matches it, which re-probes composite blocks from a cache)."),
        "",
        "## Machine and load",
        "",
        (f"- {machine.get('nproc')} cores ({machine.get('cpu')}), {machine.get('memory')} RAM; Python "
         f"{machine.get('python')}, TensorFlow {machine.get('tensorflow')}, Keras {machine.get('keras')}, "
         f"keras_hub {machine.get('keras_hub')}, cvxpy {machine.get('cvxpy')}."),
        (f"- Command `{machine.get('command')}`, library at commit {machine.get('git_commit')}"
         f"{' + local changes to tf_precrop/' if machine.get('tf_precrop_dirty') else ''}; `uptime` at start "
         f"`{machine.get('uptime_start')}`, at end `{machine.get('uptime_end')}`"
         f"{run_time}."),
        ("- Timings were taken on a shared, loaded machine: the 2 cores serve several agents running tests "
         "(column *load1*: 1-minute load average when the model started). Plan and crop times of the "
         "composite-block families include the symbolic probes of their blocks (a Keras trace per block and "
         "per free inner width, once per block config): the first walk of such a model pays them, which is column "
         "*count s* (the dense `tf_precrop.count`); later walks of the same model read a cache. They are "
         "pessimistic and noisy."),
        "",
        "## Summary",
        "",
        (f"- Models: {len(rows)}, without error: {len(ok)}; exact (params, MACs and every layer = plan): "
         f"{len(exact)}; structure kept: {len(kept)}."),
        (f"- Achieved MACs ratio at flops={f_:g}: max |ratio - {f_:g}| = {max(f_dev):.4f}; achieved params ratio "
         f"at params={p_:g}: max |ratio - {p_:g}| = {max(p_dev):.4f}.") if f_dev and p_dev else "",
        "",
        "## Per model",
        "",
        report.plans_table(table),
        "",
    ]
    with open(os.path.join(out_dir, "zoo_hub.md"), "w") as f:
        f.write("\n".join(lines))


def main(argv):
    del argv
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    json_path = os.path.join(FLAGS.out_dir, "zoo_hub.json")
    if FLAGS.summarize_only:
        write_summary(zoo._load(json_path), FLAGS.out_dir)  # pylint: disable=protected-access
        return 0
    import keras_hub  # pylint: disable=g-import-not-at-top

    import tf_precrop  # pylint: disable=g-import-not-at-top

    families = _families()
    names = FLAGS.models or list(families)
    unknown = [n for n in names if n not in families]
    if unknown:
        raise app.UsageError(f"Unknown --models {unknown}. Choices: {', '.join(families)}")
    machine = zoo.machine_info()
    machine["keras_hub"] = keras_hub.__version__
    machine["command"] = "python -m benchmarks.zoo_hub" + (f" --models={','.join(FLAGS.models)}" if FLAGS.models
                                                           else "") + f" --image_size={FLAGS.image_size}"
    previous = zoo._load(json_path) if FLAGS.models else None  # pylint: disable=protected-access
    rows = [r for r in (previous or {}).get("rows", []) if r["model"] not in names]
    tf_precrop.plan(tf_precrop.models.resnet20(), flops=0.5)  # warm up cvxpy
    start = time.perf_counter()
    settings = {"flops": FLAGS.flops, "params": FLAGS.params, "repeats": FLAGS.repeats,
                "image_size": FLAGS.image_size}
    order = list(families)
    for name in names:
        row, seconds = zoo._timed(lambda name=name: run_model(name, families[name]))  # pylint: disable=protected-access
        row["total_s"] = seconds
        rows.append(row)
        print(f"[zoo_hub] {name}: {seconds:.1f} s " + json.dumps(
            {k: row.get(k) for k in ("f_macs_ratio", "p_params_ratio", "f_plan_s", "crop_s", "params_match",
                                     "macs_match", "layers_match", "structure_kept", "residual_blocks",
                                     "forward_ok", "load1", "error")}), flush=True)
        machine["uptime_end"] = zoo._sh(["uptime"])  # pylint: disable=protected-access
        machine["run_seconds"] = time.perf_counter() - start
        rows.sort(key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))
        data = {"machine": machine, "settings": settings, "rows": rows}
        with open(json_path, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
    write_summary(data, FLAGS.out_dir)
    print(f"[zoo_hub] {len(names)} models in {machine['run_seconds']:.0f} s -> {FLAGS.out_dir}/zoo_hub.*")
    return 0


if __name__ == "__main__":
    app.run(main)
