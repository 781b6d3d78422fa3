"""`ceptoar templates check` finds undefined names, HTML that does not nest, and overlong text lines."""

from __future__ import annotations

import shutil
from pathlib import Path

from ceptoar.render import default_templates_dir
from ceptoar.render.check import html_problems
from ceptoar.text import width
from tests.harness import run_cli


def test_the_shipped_templates_have_no_problem_with_any_sample() -> None:
    done = run_cli("templates", "check", env={})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("5 samples, 0 errors, 0 warnings")


def test_each_kind_of_problem_is_reported_with_where_it_shows(tmp_path: Path) -> None:
    broken = tmp_path / "templates"
    shutil.copytree(default_templates_dir(), broken)
    text = broken / "ja" / "alert.txt.j2"
    text.write_text(
        text.read_text(encoding="utf-8")
        + "{{ notice.no_such_field }}\n"
        + "x" * 1000
        + "\n"
        + "お知らせ" * 20
        + "\n",
        encoding="utf-8",
    )
    html = broken / "en" / "alert.html.j2"
    html.write_text(html.read_text(encoding="utf-8").replace("</p>", "", 1), encoding="utf-8")
    done = run_cli("templates", "check", "--dir", str(broken), env={})
    assert done.returncode == 1
    out = done.stdout
    assert "error: advisory-csaf.json ja critical alert: UndefinedError:" in out and "no_such_field" in out
    assert "en critical alert: HTML: line" in out and "<p> is not closed" in out
    assert "1000 octets, over SMTP's 998" not in out  # the undefined name stops ja's text first
    text.write_text(text.read_text(encoding="utf-8").replace("{{ notice.no_such_field }}\n", ""), "utf-8")
    again = run_cli("templates", "check", "--dir", str(broken), env={})
    assert "text line" in again.stdout and "1000 octets, over SMTP's 998" in again.stdout
    assert "is 160 columns wide: お知らせ" in again.stdout


def test_html_nesting_and_display_width() -> None:
    assert html_problems("<table><tr><td>a</td></tr></table><br><img src=x>") == []
    assert html_problems("<div><p>a</div>") == ["line 1: <p> is not closed before </div>"]
    assert html_problems("<p>a</p></td>") == ["line 1: </td> closes nothing open"]
    assert html_problems("<ul><li>a") == ["line 1: <ul> is never closed", "line 1: <li> is never closed"]
    assert width("警報 ID") == 7 and width("ＡＢ") == 4
