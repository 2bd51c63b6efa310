r"""PreConfig: width redistributed at the dense model's cost, and the effect of max_ratio (u).

For EfficientNetB0 and MobileNetV2 (224x224, weights=None) and the bundled CIFAR ResNet-20 (32x32):
  - `preconfig_plan(model, flops=1.0, max_ratio=u)` for u in --max_ratios: achieved MACs and params ratio,
    number of channel groups that grow / shrink / stay / sit at the cap u;
  - the paper's EfficientNetB0 point `preconfig_plan(model, flops=1.0, params=0.8, max_ratio=u)`;
  - `plan(model, flops=0.5)` (PreCrop) for reference;
  - the mean width ratio per output resolution (where the width goes);
  - for the paper point at the default u, `preconfig(...)` is built and `count_params()` checked against the plan.
Plus a width plot for EfficientNetB0: dense vs PreCrop(flops=0.5) vs PreConfig(flops=1.0, max_ratio=2) vs
PreConfig(flops=1.0, params=0.8, max_ratio=2) via `tf_precrop.report.plot_widths`.

Writes benchmarks/results/preconfig.{json,csv,md,png}.

Usage (from the repository root):
    python -m benchmarks.preconfig
    python -m benchmarks.preconfig --max_ratios=1.25,1.5,2,3
"""

import collections
import csv
import gc
import json
import math
import os
import subprocess
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_list("models", ["efficientnetb0", "mobilenetv2", "resnet20"], "Models (tf_precrop.models names).")
flags.DEFINE_list("max_ratios", ["1.25", "1.5", "2"], "Values of max_ratio (u) to sweep.")
flags.DEFINE_float("paper_params", 0.8, "Params cap of the paper's EfficientNetB0 point (with flops=1.0).")
flags.DEFINE_float("precrop_flops", 0.5, "MACs budget of the PreCrop reference plan.")
flags.DEFINE_string("out_dir", os.path.join("benchmarks", "results"), "Where preconfig.* go.")

INPUT_SHAPES = {"efficientnetb0": (224, 224, 3), "mobilenetv2": (224, 224, 3)}
PLOT_MODEL = "efficientnetb0"
PLOT_MAX_RATIO = 2.0
MAX_GROUP_ROWS = 16  # list every group in the md for small models (ResNet-20); the JSON always has them
CSV_COLUMNS = ["model", "config", "max_ratio", "flops", "params", "macs_ratio", "params_ratio", "groups_free",
               "grow", "shrink", "same", "at_cap", "max_group_ratio", "min_group_ratio", "plan_s", "error"]


def _groups(plan, max_ratio):
    """Counts of free groups that grow / shrink / keep their width / sit at the cap (continuous c_g ~ u)."""
    free = [g for g in plan.groups if g.fixed is None]
    ratios = [g.width / g.dense_width for g in free if g.dense_width]
    return {
        "groups_free": len(free),
        "grow": sum(g.width > g.dense_width for g in free),
        "shrink": sum(g.width < g.dense_width for g in free),
        "same": sum(g.width == g.dense_width for g in free),
        "at_cap": sum(g.ratio is not None and g.ratio >= max_ratio * (1 - 1e-3) for g in free),
        "max_group_ratio": max(ratios) if ratios else None,
        "min_group_ratio": min(ratios) if ratios else None,
    }


def _resolution(model, lp):
    """Output spatial size (e.g. "14x14") of a width-carrying layer; "1x1" for Dense / pooled outputs."""
    try:
        shape = model.get_layer(lp.name).output.shape
    except (ValueError, AttributeError):
        return None
    return f"{shape[1]}x{shape[2]}" if len(shape) == 4 else "1x1"


def _by_resolution(model, plans):
    """Mean width ratio (width / dense width) of width-carrying layers per output resolution, per plan."""
    out = collections.OrderedDict()
    first = next(iter(plans.values()))
    res = {lp.name: _resolution(model, lp) for lp in first.layers if lp.sets_width}
    order = sorted({r for r in res.values() if r}, key=lambda r: -int(r.split("x")[0]))
    for r in order:
        names = [n for n, v in res.items() if v == r]
        entry = {"resolution": r, "layers": len(names)}
        dense = {lp.name: lp for lp in first.layers if lp.name in names}
        entry["dense params share"] = sum(dense[n].dense_params for n in names) / first.dense_params
        entry["dense MACs share"] = sum(dense[n].dense_macs for n in names) / first.dense_macs
        for label, plan in plans.items():
            widths = {lp.name: lp for lp in plan.layers if lp.name in names}
            entry[f"{label}: width x"] = math.exp(
                sum(math.log(widths[n].width / widths[n].dense_width) for n in names) / len(names))
            entry[f"{label}: params"] = sum(widths[n].params for n in names) / plan.dense_params
        out[r] = entry
    return list(out.values())


def run_model(name, results, plot_plans):
    import keras  # pylint: disable=g-import-not-at-top
    import tf_precrop  # pylint: disable=g-import-not-at-top

    model = tf_precrop.models.build(name, input_shape=INPUT_SHAPES.get(name))
    dense = tf_precrop.count(model)
    info = {"model": name, "input": "x".join(map(str, model.input_shape[1:])), "dense_macs": dense.macs,
            "dense_params": dense.params, "rows": []}
    print(f"[preconfig] {name}: {dense.macs / 1e9:.3f} GMACs, {dense.params / 1e6:.2f} M params", flush=True)

    def add(config, max_ratio, flops, params, fn):
        row = {"model": name, "config": config, "max_ratio": max_ratio, "flops": flops, "params": params}
        start = time.perf_counter()
        plan = None
        try:
            plan = fn()
            row.update(macs_ratio=plan.macs_ratio, params_ratio=plan.params_ratio, **_groups(plan, max_ratio))
        except Exception as err:  # pylint: disable=broad-except
            row["error"] = f"{type(err).__name__}: {err}"
        row["plan_s"] = time.perf_counter() - start
        info["rows"].append(row)
        print(f"[preconfig]   {config} u={max_ratio:g}: " + json.dumps(
            {k: row.get(k) for k in ("macs_ratio", "params_ratio", "grow", "shrink", "same", "at_cap", "error")}),
              flush=True)
        return plan

    precrop = add(f"PreCrop flops={FLAGS.precrop_flops:g}", 1.0, FLAGS.precrop_flops, None,
                  lambda: tf_precrop.plan(model, flops=FLAGS.precrop_flops))
    add(f"PreCrop params={FLAGS.paper_params:g}", 1.0, None, FLAGS.paper_params,
        lambda: tf_precrop.plan(model, params=FLAGS.paper_params))
    by_res = {f"PreCrop flops={FLAGS.precrop_flops:g}": precrop} if precrop else {}
    if precrop:
        info["groups_precrop"] = [
            {"group": g.id, "origin": g.origin, "members": len(g.members), "dense_width": g.dense_width,
             "width": g.width, "ratio": g.ratio} for g in precrop.groups if g.fixed is None]
    paper_default = None
    for u in [float(v) for v in FLAGS.max_ratios]:
        p1 = add("PreConfig flops=1", u, 1.0, None,
                 lambda: tf_precrop.preconfig_plan(model, flops=1.0, max_ratio=u))  # pylint: disable=cell-var-from-loop
        p2 = add(f"PreConfig flops=1 params={FLAGS.paper_params:g}", u, 1.0, FLAGS.paper_params,
                 lambda: tf_precrop.preconfig_plan(model, flops=1.0, params=FLAGS.paper_params,  # pylint: disable=cell-var-from-loop
                                                   max_ratio=u))  # pylint: disable=cell-var-from-loop
        if u == PLOT_MAX_RATIO:
            add(f"PreConfig params={FLAGS.paper_params:g}", u, None, FLAGS.paper_params,
                lambda: tf_precrop.preconfig_plan(model, flops=None, params=FLAGS.paper_params,  # pylint: disable=cell-var-from-loop
                                                  max_ratio=u))  # pylint: disable=cell-var-from-loop
            if p1:
                by_res[f"PreConfig flops=1 u={u:g}"] = p1
                info["groups_flops1_u2"] = [
                    {"group": g.id, "origin": g.origin, "members": len(g.members), "dense_width": g.dense_width,
                     "width": g.width, "ratio": g.ratio} for g in p1.groups if g.fixed is None]
            if p2:
                by_res[f"PreConfig flops=1 params={FLAGS.paper_params:g} u={u:g}"] = p2
                paper_default = p2
    if by_res:
        info["by_resolution"] = _by_resolution(model, by_res)
    if paper_default is not None:
        start = time.perf_counter()
        wide = tf_precrop.crop(model, paper_default)
        info["paper_point_build"] = {"count_params": wide.count_params(), "plan_params": paper_default.params,
                                     "match": wide.count_params() == paper_default.params,
                                     "macs_match": tf_precrop.count(wide).macs == paper_default.macs,
                                     "seconds": time.perf_counter() - start}
        del wide
    if name == PLOT_MODEL:
        plot_plans.update(by_res)
    results.append(info)
    model = None  # free the dense model before the next one is built
    keras.backend.clear_session()
    gc.collect()


def _f(value, spec=".4f"):
    return "" if value is None else format(value, spec)


def write_outputs(results, out_dir, uptime, seconds):
    from tf_precrop import report  # pylint: disable=g-import-not-at-top

    rows = [row for info in results for row in info["rows"]]
    with open(os.path.join(out_dir, "preconfig.json"), "w") as f:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
        json.dump({"results": results, "uptime": uptime, "run_seconds": seconds, "git_commit": commit},
                  f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out_dir, "preconfig.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def table(info):
        return report.plans_table([{
            "config": r["config"], "u (max_ratio)": _f(r["max_ratio"], "g"),
            "MACs x": _f(r.get("macs_ratio")), "params x": _f(r.get("params_ratio")),
            "groups grow / shrink / same (free)": (f"{r['grow']} / {r['shrink']} / {r['same']} ({r['groups_free']})"
                                                   if "grow" in r else ""),
            "at cap u": r.get("at_cap"), "group width ratio min..max": (
                f"{r['min_group_ratio']:.2f}..{r['max_group_ratio']:.2f}" if r.get("max_group_ratio") else ""),
            "plan s": _f(r.get("plan_s"), ".2f"), "error": r.get("error"),
        } for r in info["rows"]])

    def res_table(info):
        rows_ = []
        for e in info.get("by_resolution", []):
            row = {k: (_f(v, ".3f") if isinstance(v, float) else v) for k, v in e.items()}
            rows_.append(row)
        return report.plans_table(rows_) if rows_ else "(not available)"

    def get(model, config, u):
        for info in results:
            for r in info["rows"]:
                if r["model"] == model and r["config"] == config and r["max_ratio"] == u:
                    return r
        return {}

    pp = f"PreConfig flops=1 params={FLAGS.paper_params:g}"
    lines = [
        "# PreConfig: same FLOPs, redistributed widths",
        "",
        "Generated by `python -m benchmarks.preconfig` (benchmarks/preconfig.py); data in preconfig.json / "
        "preconfig.csv, width plot preconfig.png.",
        "`tf_precrop.preconfig_plan(model, flops=1.0, [params=...], max_ratio=u)` solves the PreCrop geometric "
        "program (maximize the sum over layers of log p_l, docs/method.md § The program) with every group ratio "
        "c_g <= u "
        "instead of <= 1 and the budget set to the dense model's own cost, then rounds widths to integers. "
        "*MACs x* / *params x* are the achieved ratios to the dense model. A *group* is a channel group "
        "(tensors that must share a width); *grow / shrink / same* count the free groups whose integer width "
        "is above / below / equal to the dense width, *at cap u* those whose continuous ratio sits at u.",
        f"Load while running: `{uptime[0]}` at start, `{uptime[1]}` at end (2 cores shared with other agents; "
        "plan times are wall times under that load).",
        "",
    ]
    for info in results:
        lines += [f"## {info['model']} ({info['input']}; {info['dense_macs'] / 1e9:.3f} GMACs, "
                  f"{info['dense_params'] / 1e6:.3f} M params)", "", table(info), ""]
        if info.get("by_resolution"):
            lines += ["Where the width goes: the width-carrying layers (Conv2D filters, Dense units) grouped by "
                      "their output resolution (1x1 = squeeze-excite convs and the classifier), with the group's "
                      "share of the dense params and MACs; per plan the geometric-mean width ratio (width / dense "
                      "width) and the group's params as a fraction of the *dense* model's total params (the "
                      "columns sum to the plan's params ratio, minus BN/depthwise/bias params of other layers):",
                      "", res_table(info), ""]
        groups = info.get("groups_flops1_u2", [])
        if groups and len(groups) <= MAX_GROUP_ROWS:
            lines += [f"Free groups of PreConfig flops=1, u={PLOT_MAX_RATIO:g} (origin = the layer whose output "
                      "starts the group; *members* = layers whose output width is in it):", "",
                      report.plans_table([{"group": g["group"], "origin": g["origin"], "members": g["members"],
                                           "dense width": g["dense_width"], "width": g["width"],
                                           "c_g (continuous)": _f(g["ratio"], ".3f")} for g in groups]), ""]
        if info.get("paper_point_build"):
            b = info["paper_point_build"]
            lines += [f"`tf_precrop.preconfig(model, flops=1.0, params={FLAGS.paper_params:g}, max_ratio="
                      f"{PLOT_MAX_RATIO:g})` built in {b['seconds']:.1f} s: `count_params()` = {b['count_params']:,}"
                      f" {'=' if b['match'] else '!='} plan.params = {b['plan_params']:,}; MACs "
                      f"{'match' if b['macs_match'] else 'DO NOT match'} the plan.", ""]

    e2, m2, r2 = (get("efficientnetb0", "PreConfig flops=1", 2.0), get("mobilenetv2", "PreConfig flops=1", 2.0),
                  get("resnet20", "PreConfig flops=1", 2.0))
    ep, mp = get("efficientnetb0", pp, 2.0), get("mobilenetv2", pp, 2.0)

    def _series(model):
        return " / ".join(_f(get(model, "PreConfig flops=1", float(u)).get("params_ratio"), ".2f") + "x"
                          for u in FLAGS.max_ratios)

    def _pc(model):
        return str(get(model, f"PreCrop flops={FLAGS.precrop_flops:g}", 1.0).get("shrink", "?"))

    def _cut(model, streams=True):
        groups = next((i.get("groups_precrop", []) for i in results if i["model"] == model), [])
        cut = [g for g in groups if g["width"] < g["dense_width"] and ("project" in g["origin"]) == streams]
        if not cut:
            return "none"
        if not streams:
            return ", ".join(f"{g['origin']} {g['dense_width']} -> {g['width']}" for g in cut)
        ratios = [g["width"] / g["dense_width"] for g in cut]
        first = cut[0]
        return (f"{len(cut)} groups, width ratios {min(ratios):.2f}..{max(ratios):.2f}; e.g. {first['origin']} "
                f"{first['dense_width']} -> {first['width']}")

    def _bucket(model, resolution, key):
        for info in results:
            if info["model"] == model:
                for e in info.get("by_resolution", []):
                    if e["resolution"] == resolution and e.get(key) is not None:
                        return f"{e[key]:.3f}"
        return "?"
    lines += [
        "## Interpretation (docs/method.md § PreConfig)",
        "",
        f"- **With a FLOPs budget alone, params rise.** flops=1.0 keeps MACs at 1.000x (to 4 digits) for every u, "
        f"but params go to {_series('efficientnetb0')} for EfficientNetB0 and {_series('mobilenetv2')} for "
        f"MobileNetV2 (u = {', '.join(FLAGS.max_ratios)}); at u=2 that is {_f(e2.get('params_ratio'), '.2f')}x and "
        f"{_f(m2.get('params_ratio'), '.2f')}x, the x1.5 / x1.3 estimated in docs/method.md § PreConfig. The objective "
        "(sum of log p_l) values every layer term alike, whereas the MACs a width costs scale with its layer's "
        "output resolution; so the program widens whatever is cheap in MACs and pays with what is expensive.",
        f"- **Where the params come from.** The layers with an (almost) MAC-free output, the 1x1 rows of the "
        f"resolution tables, hold {_bucket('efficientnetb0', '1x1', 'dense params share')} of EfficientNetB0's "
        f"params for {_bucket('efficientnetb0', '1x1', 'dense MACs share')} of its MACs (16 squeeze-excite "
        "reduce and 16 expand convs, and the classifier) and "
        f"{_bucket('mobilenetv2', '1x1', 'dense params share')} of MobileNetV2's (its classifier). Every squeeze-"
        "excite bottleneck group, the expanded (depthwise) groups (all in EfficientNetB0, all from block_3 on in "
        "MobileNetV2) and the last conv before the classifier "
        "(top_conv / Conv_1, 1280 -> 2560) goes to the cap u=2 (see the JSON's `groups_flops1_u2`), so the 1x1 "
        f"layers alone grow from {_bucket('efficientnetb0', '1x1', 'dense params share')} to "
        f"{_bucket('efficientnetb0', '1x1', 'PreConfig flops=1 u=2: params')} of the dense params in "
        f"EfficientNetB0 (a squeeze-excite conv has both its groups doubled: x4) and from "
        f"{_bucket('mobilenetv2', '1x1', 'dense params share')} to "
        f"{_bucket('mobilenetv2', '1x1', 'PreConfig flops=1 u=2: params')} in MobileNetV2 (the classifier's "
        "input width doubles). The MACs are paid by the narrow bottleneck streams (the project convs and the "
        "residual adds they feed: ratios 0.2..0.8) that the expanded groups read and write. This is the "
        "'width moves to low-resolution layers' effect of docs/method.md § PreConfig at its extreme (1x1 outputs); "
        "it is "
        "not a uniform move from early to late stages (in EfficientNetB0 the 112x112..28x28 layers even grow "
        "slightly while the 14x14 and 7x7 ones shrink).",
        f"- **The paper's EfficientNetB0 point needs both budgets.** With flops=1.0 *and* params="
        f"{FLAGS.paper_params:g} (u=2), EfficientNetB0 lands at {_f(ep.get('macs_ratio'), '.4f')}x MACs and "
        f"{_f(ep.get('params_ratio'), '.4f')}x params (MobileNetV2: {_f(mp.get('macs_ratio'), '.4f')}x / "
        f"{_f(mp.get('params_ratio'), '.4f')}x): same FLOPs, 80% of the parameters, the operating point the paper "
        "reports for EfficientNetB0 (+0.3% top-1; the accuracy is not reproduced here: no ImageNet offline). "
        "Both budgets bind: width still moves into the early high-resolution layers and the squeeze-excite "
        "bottlenecks, but the 7x7 layers give up params (7x7 params "
        f"{_bucket('efficientnetb0', '7x7', 'dense params share')} -> "
        f"{_bucket('efficientnetb0', '7x7', f'PreConfig flops=1 params={FLAGS.paper_params:g} u=2: params')} of "
        "the dense total). Neither budget alone gives this point: flops=1.0 alone lands at "
        f"{_f(e2.get('params_ratio'), '.2f')}x params, and params={FLAGS.paper_params:g} alone at "
        f"{_f(get('efficientnetb0', f'PreCrop params={FLAGS.paper_params:g}', 1.0).get('macs_ratio'), '.2f')}x MACs "
        "(u=1) or "
        f"{_f(get('efficientnetb0', f'PreConfig params={FLAGS.paper_params:g}', 2.0).get('macs_ratio'), '.2f')}"
        "x MACs (u=2).",
        f"- **PreCrop for comparison (flops={FLAGS.precrop_flops:g}, u=1).** The same program cuts only "
        f"{_pc('efficientnetb0')} of EfficientNetB0's 40 free groups and {_pc('mobilenetv2')} of MobileNetV2's 25. "
        f"In EfficientNetB0 these are exactly the bottleneck streams ({_cut('efficientnetb0')}); in MobileNetV2 "
        f"the streams ({_cut('mobilenetv2')}) and also {_cut('mobilenetv2', streams=False)}. Every other "
        "expanded, depthwise and squeeze-excite width stays dense (the flat blue segments in the plot). An "
        "expanded width enters three log p_l terms (expand conv, depthwise, project conv; five with the "
        "squeeze-excite reduce and expand convs of EfficientNet), a stream width two per block it passes, so "
        "under the sum-of-log-densities objective narrowing "
        "the streams is the cheapest way to halve the MACs. Whether such thin bottlenecks train as well is what "
        "the accuracy benchmarks have to show.",
        "- **u drives the result.** u is not given by the paper; `preconfig` defaults to max_ratio=2.0. The cap "
        "binds for most free groups at every u tried (column *at cap u*), so the params of the flops-only "
        "PreConfig grow with u almost linearly, and the model it describes changes with u. Report u with any "
        "PreConfig result; with the paper's two budgets the achieved ratios are the same for every u, but the "
        "widths are not.",
        f"- **ResNet-20 (CIFAR, 32x32).** At flops=1.0, u=2: MACs {_f(r2.get('macs_ratio'), '.3f')}x, params "
        f"{_f(r2.get('params_ratio'), '.3f')}x, groups grow / shrink / same = {r2.get('grow')} / "
        f"{r2.get('shrink')} / {r2.get('same')} of {r2.get('groups_free')} free groups. "
        + _resnet20_text(r2, next((i.get('groups_flops1_u2', []) for i in results
                                       if i['model'] == 'resnet20'), [])),
        "",
        "![widths](preconfig.png)",
        "",
    ]
    with open(os.path.join(out_dir, "preconfig.md"), "w") as f:
        f.write("\n".join(lines))


def _resnet20_text(r, groups):
    if not r or "grow" not in r:
        return "(no result)"
    if r["grow"] == 0:
        return ("No group grows: the plan stays (close to) the dense ResNet-20, i.e. the dense widths are "
                "already the optimum of the program at equal MACs.")
    grow = [g for g in groups if g["width"] > g["dense_width"]]
    shrink = [g for g in groups if g["width"] < g["dense_width"]]
    text = (f"Groups do grow: the {len(grow)} growing groups are "
            + ", ".join(f"{g['dense_width']} -> {g['width']} ({g['members']} members)" for g in grow)
            + (f"; the {len(shrink)} shrinking ones go to c_g "
               f"{min(g['ratio'] for g in shrink):.2f}..{max(g['ratio'] for g in shrink):.2f}." if shrink else "."))
    multi = [g for g in grow if g["members"] > 1]
    if len(multi) == len(grow):
        text += (" The growing groups are the three residual streams, and they sit at the cap u: a stream's width is "
                 "shared by every conv that reads or writes the stage's stream, so its ratio appears in far more "
                 "log p_l terms than an inner block width (2 terms; the KKT weight a_g of docs/method.md § The "
                 "program). The "
                 "inner widths of every block pay for them. This is driven by the residual topology rather than "
                 "by resolution: each of the three stages gets the same treatment.")
    return text


def main(argv):
    del argv
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    from tf_precrop import report  # pylint: disable=g-import-not-at-top

    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    import tf_precrop  # pylint: disable=g-import-not-at-top

    # Warm up cvxpy / the solver so that the first plan time is not import time.
    tf_precrop.plan(tf_precrop.models.resnet20(), flops=0.5)
    start = time.perf_counter()
    results, plot_plans = [], {}
    for name in FLAGS.models:
        run_model(name, results, plot_plans)
    uptime_end = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    seconds = time.perf_counter() - start
    if plot_plans:
        report.plot_widths(plot_plans, os.path.join(FLAGS.out_dir, "preconfig.png"),
                           title="EfficientNetB0 (224x224): per-layer widths, dense vs PreCrop vs PreConfig")
    write_outputs(results, FLAGS.out_dir, (uptime_start, uptime_end), seconds)
    print(f"[preconfig] done in {seconds:.0f} s -> {FLAGS.out_dir}/preconfig.*")


if __name__ == "__main__":
    app.run(main)
