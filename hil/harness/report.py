"""The run's report in DIR: report.json, junit.xml, report.md and report.html with PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from . import scenario as sc
from .runner import RunResult

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def scrub(text: str, secrets: list[str]) -> str:
    """No token and no API secret in a report (a device's error line might quote one)."""
    text = JWT.sub("[token]", text)
    for s in secrets:
        if s:
            text = text.replace(s, "[secret]")
    return text


def _wav_name(r: sc.ScenarioResult, name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{r.scenario}-{r.repeat}-{name}".lower()).strip("-") + ".wav"


def to_dict(run: RunResult) -> dict:
    d = dataclasses.asdict(dataclasses.replace(run, results=[dataclasses.replace(r, recordings={})
                                                             for r in run.results]))
    for rd, r in zip(d["results"], run.results):
        rd["recordings"] = [_wav_name(r, n) for n in r.recordings]
    d["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.started))
    d["summary"] = {k: sum(1 for r in run.results if r.status == k) for k in (sc.PASSED, sc.FAILED, sc.SKIPPED)}
    return d


def _fig_props(r: sc.ScenarioResult) -> dict[str, str]:
    return {name: f.text() for name, f in r.figures.items()}


def junit(run: RunResult) -> ET.ElementTree:
    suite = ET.Element("testsuite", name=f"lkdevice-hil.{run.target}", tests=str(len(run.results)),
                       failures=str(len(run.failed)),
                       skipped=str(sum(1 for r in run.results if r.status == sc.SKIPPED)),
                       time=f"{run.elapsed_s:.1f}")
    props = ET.SubElement(suite, "properties")
    for k, v in dataclasses.asdict(run.identity).items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                ET.SubElement(props, "property", name=f"{k}.{k2}", value=str(v2))
        elif v is not None:
            ET.SubElement(props, "property", name=k, value=str(v))
    ET.SubElement(props, "property", name="profile", value=run.profile)
    for r in run.results:
        case = ET.SubElement(suite, "testcase", classname=f"hil.{run.target}", name=f"{r.scenario}[{r.repeat}]",
                             time=f"{r.elapsed_s:.1f}")
        if r.figures:
            cp = ET.SubElement(case, "properties")
            for k, v in _fig_props(r).items():
                ET.SubElement(cp, "property", name=k, value=v)
        if r.status == sc.FAILED:
            f = ET.SubElement(case, "failure", message=r.reason[:500])
            f.text = "\n".join([r.reason, *(f"{s.name}: {s.status} {s.message}" for s in r.steps),
                                *r.device_errors])
        elif r.status == sc.SKIPPED:
            ET.SubElement(case, "skipped", message=r.reason)
    return ET.ElementTree(suite)


def _grid(run: RunResult) -> tuple[list[str], dict[str, list[sc.ScenarioResult]]]:
    names: list[str] = []
    by: dict[str, list[sc.ScenarioResult]] = {}
    for r in run.results:
        if r.scenario not in by:
            names.append(r.scenario)
        by.setdefault(r.scenario, []).append(r)
    return names, by


MARK = {sc.PASSED: "pass", sc.FAILED: "FAIL", sc.SKIPPED: "skip"}


def markdown(run: RunResult, plots: list[tuple[str, str]] = ()) -> str:
    ident = run.identity
    names, by = _grid(run)
    s = to_dict(run)["summary"]
    lines = [f"# HIL run: {run.target}, profile {run.profile}",
             "",
             f"{to_dict(run)['started_utc']}, {run.elapsed_s:.0f} s: {s['passed']} passed, {s['failed']} failed, "
             f"{s['skipped']} skipped.",
             f"Target: firmware {ident.firmware_hash}, board {ident.board}, MicroPython {ident.micropython or '-'}, "
             f"commit {ident.git_commit or '-'}.",
             "",
             "| scenario | " + " | ".join(f"#{i}" for i in range(1, run.repeat + 1)) + " | figures (last run) |",
             "|---|" + "---|" * run.repeat + "---|"]
    for n in names:
        rs = by[n]
        figs = ", ".join(f"{k} {v}" for k, v in _fig_props(rs[-1]).items() if not k.endswith("_samples"))
        lines.append(f"| {n} | " + " | ".join(MARK[r.status] for r in rs) + f" | {figs} |")
    why = [r for r in run.results if r.status != sc.PASSED]
    if why:
        lines += ["", "## Why"]
        lines += [f"- {r.scenario}#{r.repeat} {MARK[r.status]}: {r.reason}" for r in why]
    if plots:
        lines += ["", "## Plots", *(f"- {title}: {name}" for title, name in plots)]
    return "\n".join(lines) + "\n"


def plot(run: RunResult, out: Path) -> list[tuple[str, str]]:
    """One PNG per series (the last repeat's, with the others faint behind it); (title, file name)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    names, by = _grid(run)
    for n in names:
        series_names: list[str] = []
        for r in by[n]:
            series_names += [k for k in r.series if k not in series_names]
        for sname in series_names:
            fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
            for r in by[n]:
                s = r.series.get(sname)
                if not s or not (s["points"] or any(s.get("lines", {}).values())):
                    continue
                last = r is by[n][-1]
                lines = s.get("lines") or {f"run {r.repeat}": s["points"]}
                for i, (label, pts) in enumerate(lines.items()):
                    if not pts:
                        continue
                    xs, ys = zip(*pts)
                    kind = "o-" if len(xs) < 30 else "-"
                    if "lines" in s:  # one colour per line; earlier repeats faint and unlabelled
                        label = label if last else None
                    ax.plot(xs, ys, kind, alpha=1.0 if last else 0.35, label=label, markersize=3,
                            color=f"C{i}" if "lines" in s else None)
                ax.set_xlabel(s["x"])
                ax.set_ylabel(s["y"])
            title = f"{run.target} · {n}: {sname}"
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            if len(by[n]) > 1 or any("lines" in (r.series.get(sname) or {}) for r in by[n]):
                ax.legend(fontsize=8)
            fig.tight_layout()
            fname = re.sub(r"[^a-z0-9]+", "-", f"{n}-{sname}".lower()).strip("-") + ".png"
            fig.savefig(out / fname)
            plt.close(fig)
            made.append((title, fname))
    return made


def html_page(run: RunResult, plots: list[tuple[str, str]]) -> str:
    names, by = _grid(run)
    e = html.escape
    rows = []
    for n in names:
        cells = "".join(f'<td class="{r.status}" title="{e(r.reason)}">{MARK[r.status]}</td>' for r in by[n])
        rows.append(f"<tr><th>{e(n)}</th>{cells}</tr>")
    details = []
    for r in run.results:
        steps = "".join(f"<li class='{st.status}'>{e(st.name)} ({st.elapsed_s:.1f} s) {e(st.message)}"
                        + (" — " + e(", ".join(f"{k} {v.text()}" for k, v in st.figures.items()))
                           if st.figures else "") + "</li>" for st in r.steps)
        figs = "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in _fig_props(r).items())
        details.append(f"<h3>{e(r.scenario)} #{r.repeat}: <span class='{r.status}'>{r.status}</span></h3>"
                       + (f"<p>{e(r.reason)}</p>" if r.reason else "")
                       + (f"<ul>{figs}</ul>" if figs else "") + (f"<ol>{steps}</ol>" if steps else "")
                       + ("<pre>" + e("\n".join(r.device_errors)) + "</pre>" if r.device_errors else "")
                       + "".join(f"<p><audio controls src='{e(_wav_name(r, n))}'></audio> {e(n)}</p>"
                                 for n in r.recordings))
    imgs = "".join(f"<figure><img src='{e(f)}' alt='{e(t)}'><figcaption>{e(t)}</figcaption></figure>"
                   for t, f in plots)
    ident = "".join(f"<li>{e(k)}: {e(str(v))}</li>" for k, v in dataclasses.asdict(run.identity).items())
    head = "".join(f"<th>#{i}</th>" for i in range(1, run.repeat + 1))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>HIL {e(run.target)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} td,th{{padding:.2em .8em;text-align:left}}
.passed{{color:#070}} .failed{{color:#b00;font-weight:bold}} .skipped{{color:#888}} img{{max-width:100%}}</style>
</head><body><h1>HIL run: {e(run.target)}, profile {e(run.profile)}</h1>
<ul>{ident}</ul><table><tr><th>scenario</th>{head}</tr>{''.join(rows)}</table>
<h2>Plots</h2>{imgs or '<p>none</p>'}<h2>Scenarios</h2>{''.join(details)}</body></html>
"""


def write(run: RunResult, out: str | Path, secrets: list[str] = ()) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    secrets = list(secrets)
    plots = plot(run, out)
    from lkdevice.host_tools.simulator import write_wav
    for r in run.results:
        for name, (pcm, rate) in r.recordings.items():
            write_wav(out / _wav_name(r, name), pcm, rate)
    (out / "report.json").write_text(scrub(json.dumps(to_dict(run), indent=1), secrets))
    tree = junit(run)
    ET.indent(tree)
    (out / "junit.xml").write_text(scrub(ET.tostring(tree.getroot(), encoding="unicode"), secrets))
    (out / "report.md").write_text(scrub(markdown(run, plots), secrets))
    (out / "report.html").write_text(scrub(html_page(run, plots), secrets))
    return out
