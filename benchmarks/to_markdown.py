"""Turn the JSON of ``microconv bench --json`` (or train_throughput.py --json, or
``microconv bench --time-to-accuracy --json``) into the Markdown tables of
docs/benchmarks.md, so the document shows exactly what was measured.

    python benchmarks/to_markdown.py bench.json [profile.json]
    python benchmarks/to_markdown.py time-to-accuracy.json
"""

from __future__ import annotations

import json
import sys

from microconv.cli.bench import rate_cell


def _rate(summary):
    return rate_cell(summary, dash="–")


def _ratio(value):
    if value is None:
        return ""
    return "<0.01x" if value < 0.01 else f"{value:.2f}x"


def throughput_table(result):
    ratios = result.get("ratios_to_torch", {})
    lines = ["| backend | train img/s, median (min–max) | ms per step | infer img/s | "
             "train vs torch | infer vs torch |",
             "|---|---:|---:|---:|---:|---:|"]
    rows = list(result["backends"].items())
    torch_entry = result.get("torch")
    if torch_entry and torch_entry.get("available"):
        rows.append((f"torch {torch_entry['version']}", torch_entry))
    for name, entry in rows:
        ratio = ratios.get(name, {"train": 1.0, "infer": 1.0} if name.startswith("torch") else {})
        label = name
        if entry["train"]["batch_size"] != result["batch_size"]:
            label += f" ({entry['train']['batch_size']} image per step; "
            label += f"{entry['train']['seconds_per_image']:.1f} s/image training, "
            label += f"{entry['infer']['seconds_per_image']:.1f} s/image inference)"
        lines.append(f"| {label} | {_rate(entry['train'])} | {entry['train']['ms_per_step']:,.1f} "
                     f"| {_rate(entry['infer'])} | {_ratio(ratio.get('train'))} | "
                     f"{_ratio(ratio.get('infer'))} |")
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"| {name} | skipped: {reason} | | | | |")
    return "\n".join(lines)


def machine_lines(result):
    m = result["machine"]
    blas = result["blas"]
    if isinstance(blas, list):
        kernel = "; ".join(f"{b['internal_api']} {b['version']}, kernel {b['architecture']}, "
                           f"{b['num_threads']} threads ({b['library']})" for b in blas)
    else:
        kernel = "unknown"
    return "\n".join([
        f"- CPU: {m['cpu']}, {m['cores']} cores; {m['system']}",
        f"- Python {m['python']}, NumPy {m['numpy']}",
        f"- BLAS: {kernel}",
        f"- threads: {result['threads']}; batch {result['batch_size']} (training), "
        f"{result['infer_batch_size']} (inference); {result['runs']} timed runs each",
        f"- load average (1 min) before/after: {m.get('load_average_1m')} / "
        f"{m.get('load_average_1m_after')}",
    ])


def profile_tables(profiles):
    out = []
    for name, data in profiles.items():
        rows = data["rows"]
        total = sum(f + b for _, f, b in rows) or 1.0
        out.append(f"**{name}** (batch {data['batch_size']}), ms per step:\n")
        out.append("| op | forward | backward | share |")
        out.append("|---|---:|---:|---:|")
        for op, forward, backward in rows:
            if forward + backward >= 0.005 * total or op.startswith("engine"):
                out.append(f"| {op} | {forward:.2f} | {backward:.2f} | "
                           f"{100 * (forward + backward) / total:.0f}% |")
        out.append(f"| **total** | {sum(f for _, f, _ in rows):.2f} | "
                   f"{sum(b for _, _, b in rows):.2f} | 100% |\n")
    return "\n".join(out)


def time_to_accuracy_table(result):
    thresholds = result["thresholds"]
    lines = ["| contender | " + " | ".join(f"{float(t):.0%}: seconds, median (min–max) | at step"
                                          for t in thresholds) + " | best validation |",
             "|---|" + "---:|---:|" * len(thresholds) + "---:|"]
    for name, entry in result["contenders"].items():
        cells = []
        for t in thresholds:
            passed = entry[t]
            cells += (["not passed", ""] if passed is None else
                      [f"{passed['median']:.1f} ({passed['min']:.1f}–{passed['max']:.1f})",
                       ", ".join(map(str, passed["steps"]))])
        best = max(run["best_accuracy"] or 0.0 for run in entry["runs"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best:.1%} |")
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"| {name} | skipped: {reason} |" + " |" * (2 * len(thresholds)))
    m = result["machine"]
    lines.append(f"\n{result['threads']} threads, {result['repeats']} interleaved run(s) each; "
                 f"load average (1 min) before/after: {m['load_average_1m']} / "
                 f"{m['load_average_1m_after']}")
    return "\n".join(lines)


def main():
    result = json.load(open(sys.argv[1]))
    if "contenders" in result:
        print(time_to_accuracy_table(result))
        return
    print(machine_lines(result), end="\n\n")
    print(throughput_table(result), end="\n\n")
    if len(sys.argv) > 2:
        print(profile_tables(json.load(open(sys.argv[2]))["profiles"]))


if __name__ == "__main__":
    main()
