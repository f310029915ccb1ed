"""The comparison report of a sweep: each setting's metrics across seeds, its paired
difference to the baseline with a bootstrap CI over the test images, the failed and missing
jobs, and figures; written into the sweep folder (report.md, report.csv, PNGs).

drvae-report runs/drvae/multiruns/2026-11-26_10-00-00-000000 [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from drvae.atomic import write_atomic
from drvae.report.collect import (
    EXPECTED,
    FIDELITY_RATIOS,
    FIDELITY_SETS,
    Job,
    NothingToReport,
    collect,
    fidelity_figures,
    job_labels,
    settings,
)
from drvae.report.stats import (
    BOOTSTRAPPED,
    RECALLS,
    Bootstrap,
    Delta,
    deltas,
    find_baseline,
    mean_std,
    setting_values,
)

HEADLINE = (
    "test/qwk",
    "test/macro_f1",
    "test/balanced_accuracy",
    "test/accuracy",
    "test/auroc",
    "test/referable_sensitivity",
    "test/referable_specificity",
    "test/referable_auroc",
    "test/referable_sensitivity_at_spec80",
)
TABLE_METRICS = (*HEADLINE, *RECALLS, "val/loss", "val/accuracy")
CSV_COLUMNS = ("setting", "metric", "n", "mean", "std", "delta", "ci_low", "ci_high")


@dataclass
class Comparison:
    """What the report says: the jobs, their settings, and each setting's differences to
    the baseline (metric -> Delta) with why its CIs are missing, where they are."""

    root: Path
    jobs: list[Job]
    groups: dict[str, list[Job]]
    baseline: str | None
    baseline_note: str
    deltas: dict[str, dict[str, Delta]] = field(default_factory=dict)
    no_ci: dict[str, str] = field(default_factory=dict)
    external: dict[str, Comparison] = field(default_factory=dict)  # per external test set


def compare(root: Path, replicates: int = 1000, baseline: str | None = None) -> Comparison:
    """Read the sweep and compare its settings against `baseline` (a setting's label), by
    default the one whose rebalancing adds nothing; NothingToReport when no job finished."""
    jobs = collect(root)
    if not jobs:
        raise NothingToReport(f"{root}: no job folder under it ({EXPECTED})")
    groups = settings(jobs)
    if not groups:
        failed = sum(j.failure is not None for j in jobs)
        raise NothingToReport(
            f"{root}: none of its {len(jobs)} jobs finished ({failed} failed, see their "
            f"failed.json; {len(jobs) - failed} left no results.json)"
        )
    baseline, note = chosen_baseline(groups, baseline) if baseline else find_baseline(groups)
    boot = Bootstrap(replicates)
    found = _with_deltas(Comparison(Path(root), jobs, groups, baseline, note), boot)
    names = sorted({name for job in jobs for name in job.external_sets})
    for name in names:  # the same settings and baseline, seen on each external set
        on = {label: [j.on(name) for j in group] for label, group in groups.items()}
        seen = Comparison(found.root, [j.on(name) for j in jobs], on, baseline, note)
        found.external[name] = _with_deltas(seen, boot)
    return found


def chosen_baseline(groups: dict[str, list[Job]], label: str) -> tuple[str, str]:
    """The setting named on the command line (`--baseline`), or NothingToReport naming the
    settings there are (e.g. comparing graders, whose rebalancing all adds nothing)."""
    if label not in groups:
        known = "; ".join(sorted(groups))
        raise NothingToReport(f"--baseline {label!r} is not a setting here (settings: {known})")
    return label, f"baseline: {label} (chosen with --baseline)"


def _with_deltas(found: Comparison, boot: Bootstrap) -> Comparison:
    """`found` with each setting's differences to the baseline filled in."""
    if found.baseline is None:
        return found
    for label, group in found.groups.items():
        if label != found.baseline:
            base = found.groups[found.baseline]
            found.deltas[label], why = deltas(group, base, boot, BOOTSTRAPPED)
            found.no_ci |= {label: why} if why else {}
    return found


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join([_row(head), "|---" * len(head) + "|", *map(_row, rows)])


def _short(metric: str) -> str:
    return metric.removeprefix("test/")


def _mean_std(values: list[float], n_jobs: int) -> str:
    """mean ± sample std; "(n=k)" where only k of the setting's n_jobs seeds have the metric
    (runs older than the metric), so a mean never passes for one over every seed."""
    n, mean, std = mean_std(values)
    text = "" if not n else f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"
    return f"{text} (n={n})" if 0 < n < n_jobs else text


def settings_table(found: Comparison) -> str:
    """Metric rows, one column per setting: mean ± sample std across its seeds."""
    head = [f"{label}{' (baseline)' if label == found.baseline else ''}" for label in found.groups]
    rows = [["n (seeds)", *(str(len(jobs)) for jobs in found.groups.values())]]
    for metric in TABLE_METRICS:
        cells = [_mean_std(setting_values(j, metric), len(j)) for j in found.groups.values()]
        if any(cells):
            rows.append([_short(metric), *cells])
    return _table(["metric", *head], rows)


def _delta_cell(d: Delta) -> str:
    if d.delta is None:
        return "n/a"
    ci = "[n/a]" if d.low is None else f"[{d.low:+.3f}, {d.high:+.3f}]"
    return f"{d.delta:+.3f} {ci}{' *' if d.excludes_zero else ''}"


def delta_table(found: Comparison, replicates: int) -> str:
    """Metric rows, one column per setting: Δ to the baseline [95% CI], and the notes."""
    if not found.deltas:
        return found.baseline_note + "." if found.baseline is None else "no other setting."
    labels = list(found.deltas)
    rows = [[_short(m), *(_delta_cell(found.deltas[s][m]) for s in labels)] for m in BOOTSTRAPPED]
    rows = [row for row in rows if any(cell != "n/a" for cell in row[1:])]
    notes = [
        f"Δ: setting − baseline with the same seed, mean over the seeds both ran; [95% CI]: "
        f"paired percentile bootstrap over the test images ({replicates} replicates); "
        "*: the CI excludes 0.",
        *(f"CI n/a for {label}: {why}." for label, why in found.no_ci.items()),
    ]
    return (
        f"{found.baseline_note}.\n\n"
        + _table(["metric", *labels], rows)
        + "\n\n"
        + ("\n".join(f"- {n}" for n in notes))
    )


def external_section(name: str, seen: Comparison, replicates: int) -> str:
    """An external test set's metrics per setting and differences to the baseline."""
    n = {j.results["external"][name]["n_images"] for j in seen.jobs if name in j.external_sets}
    return "\n\n".join(
        [
            f"## External test set {name} ({', '.join(map(str, sorted(n)))} images)",
            settings_table(seen),
            delta_table(seen, replicates).replace("the test images", f"the {name} images"),
        ]
    )


def job_lists(found: Comparison) -> str:
    """The failed jobs with their error, then the jobs that left neither file."""
    name = {j.folder: str(j.folder.relative_to(found.root)) for j in found.jobs}
    failed = [j for j in found.jobs if j.results is None and j.failure is not None]
    missing = [j for j in found.jobs if j.results is None and j.failure is None]
    lines = []
    if failed:
        lines += ["## Failed jobs", ""]
        lines += [f"- `{name[j.folder]}`: {_one_line(j.failure)}" for j in failed] + [""]
    if missing:
        lines += ["## Missing or unfinished jobs (neither results.json nor failed.json)", ""]
        lines += [f"- `{name[j.folder]}`" for j in missing] + [""]
    return "\n".join(lines).strip()


def _one_line(failure: dict) -> str:
    error = " ".join(str(failure.get("error", "")).split())
    return f"{failure.get('type', 'Error')}: {error}"


def per_job_table(jobs: list[Job]) -> str:
    """Each finished job's headline test metrics and train counts per grade, side by side."""
    done = [j for j in jobs if j.results and j.results.get("metrics")]
    if not done:
        return "no finished job with test metrics"
    rows = []
    for name in (*HEADLINE, *RECALLS):
        values = [j.metric(name) for j in done]
        if any(v is not None for v in values):
            rows.append([_short(name), *("" if v is None else f"{v:.3f}" for v in values)])
    for part in ("train_real", "train_synthetic", "train_oversampled"):
        counts = [j.results.get("counts", {}).get(part, {}) for j in done]
        cells = ["/".join(str(c[g]) for g in sorted(c)) for c in counts]
        rows.append([f"{part} per grade", *cells])
    return _table(["metric", *job_labels(done)], rows)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def fidelity_table(fidelity: dict) -> str:
    """One job's generator fidelity: per grade the judge's recall on the real test images,
    their reconstructions and the synthetic set, and the two ratios; pooled accuracy, QWK."""
    head = ["grade", "n real / synthetic", *FIDELITY_SETS, "recon/real", "synthetic/real"]
    rows = [
        [g, f"{row['n_real']} / {row['n_synthetic']}"]
        + [_cell(row[k]) for k in (*FIDELITY_SETS, *FIDELITY_RATIOS)]
        for g, row in fidelity["grades"].items()
    ]
    pooled = fidelity["pooled"]
    n = f"{pooled['real']['n']} / {pooled['synthetic']['n']}"
    for stat in ("accuracy", "qwk"):
        rows.append([f"pooled {stat}", n, *(_cell(pooled[s][stat]) for s in FIDELITY_SETS), "", ""])
    return _table(head, rows)


def judge_limits_table(fidelity: dict) -> str:
    """The judge's recall per grade on the real test images as they are and degraded
    (`audit.fidelity.judge_limits`): how sharp and clean an image must be for it to grade."""
    grades = list(fidelity["grades"])
    as_is = [_cell(fidelity["grades"][g]["real"]) for g in grades]
    rows = [["as they are", *as_is, _cell(fidelity["pooled"]["real"]["accuracy"])]]
    for name, found in fidelity["judge_limits"].items():
        recall = [_cell(found["recall"].get(g)) for g in grades]
        rows.append([name, *recall, _cell(found["accuracy"])])
    return _table(["real test images", *(f"recall {g}" for g in grades), "accuracy"], rows)


def _job_fidelity(fidelity: dict) -> str:
    """The fidelity table, then the judge's limits where the run measured them."""
    if "judge_limits" not in fidelity:
        return fidelity_table(fidelity)
    limits = "The judge on degraded real test images (what it can still grade):"
    return f"{fidelity_table(fidelity)}\n\n{limits}\n\n{judge_limits_table(fidelity)}"


def fidelity_section(jobs: list[Job]) -> str:
    """Each judged job's fidelity table (none: the section is left out)."""
    done = [j for j in jobs if j.results is not None]
    judged = [
        (job, label) for job, label in zip(done, job_labels(done), strict=True) if job.fidelity
    ]
    if not judged:
        return ""
    intro = (
        "Judge: the classifier trained on real images only. real: its recall on the real test "
        "images; recon: on the VAE's reconstructions of them (true grade); synthetic: on the "
        "synthetic set (requested grade, i.e. class consistency)."
    )
    tables = [f"### {label}\n\n{_job_fidelity(job.fidelity)}" for job, label in judged]
    return "\n\n".join(["## Generator fidelity", intro, *tables])


def _figures(figures: tuple[list[str], list[str]] | None) -> str:
    if figures is None:
        return ""
    written, skipped = figures
    lines = [f"- [{name}]({name})" for name in written] + [f"- skipped {w}" for w in skipped]
    return "## Figures\n\n" + "\n".join(lines)


def markdown(
    found: Comparison, replicates: int, figures: tuple[list[str], list[str]] | None
) -> str:
    """The report: settings, differences to the baseline, failed and missing jobs, the
    figures (None: none written), and each job's metrics."""
    parts = [
        f"# Comparison of {found.root}",
        f"{len(found.groups)} settings, {len(found.jobs)} jobs "
        f"({sum(len(g) for g in found.groups.values())} finished)",
        "## Test metrics: mean ± sample std across seeds",
        settings_table(found),
        "## Difference to the baseline",
        delta_table(found, replicates),
        *(external_section(name, seen, replicates) for name, seen in found.external.items()),
        fidelity_section(found.jobs),
        job_lists(found),
        _figures(figures),
        "## Per job",
        per_job_table(found.jobs),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def report(root: Path, replicates: int = 1000) -> str:
    """The Markdown alone, nothing written into the folder (for scripts)."""
    return markdown(compare(root, replicates), replicates, None)


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6g}"


def csv_rows(found: Comparison, prefix: str = "") -> list[list[str]]:
    """One row per setting and metric: setting, metric, n, mean, std, delta, ci_low, ci_high;
    an external test set's metrics named `external/<set>/test/qwk`, ..."""
    rows = []
    for label, jobs in found.groups.items():
        for metric in TABLE_METRICS:
            n, mean, std = mean_std(setting_values(jobs, metric))
            d = found.deltas.get(label, {}).get(metric, Delta(None))
            numbers = (mean, std, d.delta, d.low, d.high)
            if n:
                rows.append([label, prefix + metric, str(n), *map(_number, numbers)])
    if not prefix:  # the generator's fidelity, on the test split only
        rows += fidelity_rows(found)
    for name, seen in found.external.items():
        rows += csv_rows(seen, f"external/{name}/")
    return rows


def fidelity_rows(found: Comparison) -> list[list[str]]:
    """Per setting the fidelity figures (`fidelity/...`, drvae.report.collect) across its
    judged seeds: mean and std; no difference to the baseline (it has no synthetic set)."""
    rows = []
    for label, jobs in found.groups.items():
        figures = [fidelity_figures(j.fidelity) for j in jobs if j.fidelity]
        for name in dict.fromkeys(k for f in figures for k in f):
            n, mean, std = mean_std([f[name] for f in figures if name in f])
            rows.append([label, name, str(n), _number(mean), _number(std), "", "", ""])
    return rows


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([CSV_COLUMNS, *rows])


def write_report(
    root: Path, replicates: int = 1000, baseline: str | None = None
) -> tuple[str, list[Path]]:
    """Compare the sweep under `root` and write report.md, report.csv and the figures into
    it; returns the Markdown and the paths written."""
    from drvae.report.plots import write_plots  # matplotlib and torch: only when writing

    root = Path(root)
    found = compare(root, replicates, baseline)
    figures = write_plots(found.groups, root)
    text = markdown(found, replicates, figures)
    names = [
        write_atomic(root / "report.md", lambda tmp: tmp.write_text(text)),
        write_atomic(root / "report.csv", lambda tmp: _write_csv(tmp, csv_rows(found))),
        *figures[0],
    ]
    return text, [root / name for name in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drvae-report", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a sweep folder, or any folder of runs")
    parser.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="bootstrap replicates"
    )
    parser.add_argument(
        "--baseline",
        metavar="LABEL",
        help="the setting the others are compared with, as the report labels it (default: "
        "the one whose rebalancing adds nothing), e.g. 'classifier=resnet10t'",
    )
    args = parser.parse_args(argv)
    if args.bootstrap < 1:
        parser.error("--bootstrap: at least 1 replicate")
    try:
        text, written = write_report(args.folder, args.bootstrap, args.baseline)
    except NothingToReport as error:
        print(f"drvae-report: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(text)
    print("written:\n" + "\n".join(f"  {path}" for path in written))


if __name__ == "__main__":
    main()
