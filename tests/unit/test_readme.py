"""The README and the docs beside it say only what is there: links that resolve, queries and a
`/metrics` excerpt that use the metrics table's names and labels, no internal references."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.test_dashboards import metric_names, readme_metrics

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# What a user of the exporter reads (CHANGELOG.md keeps its history as it was).
USER_DOCS = [README, ROOT / "examples" / "README.md",
             ROOT / "helm" / "whatsapp-usage-exporter" / "README.md",
             ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def readme_queries() -> list[tuple[str, str]]:
    """(question, PromQL) for each query of the README's "What you get": in its `promql` block,
    a `# question` line followed by the query's lines."""
    block = section(README.read_text(encoding="utf-8"), "What you get")
    code = block.split("```promql\n", 1)[1].split("```", 1)[0]
    queries = []
    for chunk in code.strip().split("\n\n"):
        question, *lines = chunk.splitlines()
        assert question.startswith("# "), chunk
        queries.append((question[2:], " ".join(line.strip() for line in lines)))
    return queries


def readme_excerpt() -> list[str]:
    """The lines of the README's `/metrics` excerpt."""
    block = section(README.read_text(encoding="utf-8"), "What you get")
    return block.split("```\n", 1)[1].split("```", 1)[0].splitlines()


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but hyphens dropped, spaces to
    hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    outside_code = re.sub(r"```.*?```", "", text, flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", outside_code, re.M)}


def links(text: str) -> list[str]:
    outside_code = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", outside_code)


def queried_metrics(expr: str) -> set[str]:
    """Metric names of a query, those named by a `__name__` matcher included."""
    named = {name for names in re.findall(r'__name__=~?"([^"]+)"', expr)
             for name in names.split("|")}
    return metric_names(expr) | named


def test_readme_queries_parse() -> None:
    """The README's query block yields a question and a query for each partner question."""
    queries = readme_queries()
    assert len(queries) >= 5
    assert all(question.endswith("?") and query for question, query in queries)


@pytest.mark.parametrize(("question", "query"), readme_queries())
def test_readme_queries_use_documented_metrics(question: str, query: str) -> None:
    """Each query of "What you get" selects metrics of the Metrics table and groups only by
    labels those metrics have."""
    table = readme_metrics()
    names = queried_metrics(query)
    assert names, query
    assert names <= set(table), (question, names - set(table))
    labels = set().union(*(table[name][1] for name in names))
    for grouping in re.findall(r"\bby \(([^)]*)\)", query):
        grouped = {label.strip() for label in grouping.split(",")}
        assert grouped <= labels, (question, grouped - labels)


def test_readme_metrics_excerpt_matches_the_table() -> None:
    """Each series of the `/metrics` excerpt has its family's type and exactly the labels the
    Metrics table gives it."""
    table = readme_metrics()
    samples = 0
    for line in readme_excerpt():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert table[name][0] == kind, line
            continue
        found = re.fullmatch(r"([a-z_]+)\{([^}]*)\} \S+", line)
        assert found, line
        name, labels = found.groups()
        assert name in table, line
        assert set(re.findall(r'(\w+)="', labels)) == table[name][1], line
        samples += 1
    assert samples >= 5


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(doc: Path) -> None:
    """Every link to a heading of the same page or to a file of the repository finds it."""
    text = doc.read_text(encoding="utf-8")
    own = anchors(text)
    broken = []
    for target in links(text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in own:
                broken.append(target)
        elif not (doc.parent / path).exists():
            broken.append(target)
    assert not broken, broken


def test_readme_contents_list_every_section() -> None:
    """The table of contents names every top-level section, in the README's order."""
    text = README.read_text(encoding="utf-8")
    headings = [slug(h) for h in re.findall(r"^## (.+)$", re.sub(r"```.*?```", "", text,
                                                                   flags=re.S), re.M)]
    listed = re.findall(r"^- \[[^]]+\]\(#([^)]+)\)", section(text, "Contents"), re.M)
    assert listed == [h for h in headings if h != "contents"]


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_internal_issue_numbers(doc: Path) -> None:
    """Users read these pages: no reference to the project's internal issue numbers."""
    text = doc.read_text(encoding="utf-8")
    assert not re.findall(r"(?i)\bissues? #?\d+|(?<![\w&/])#\d+\b", text)


def test_examples_readme_names_every_example() -> None:
    """examples/README.md describes each file of examples/."""
    examples = ROOT / "examples"
    text = (examples / "README.md").read_text(encoding="utf-8")
    files = [p for p in examples.rglob("*") if p.is_file() and ".run" not in p.parts
             and p.name not in {"README.md", ".gitignore"}]
    assert files
    for path in files:
        relative = path.relative_to(examples)
        named = [f"`{relative}`", *(f"`{parent}/`" for parent in relative.parents
                                      if str(parent) != ".")]
        assert any(name in text for name in named), relative


def test_alert_table_names_every_shipped_alert() -> None:
    """"When an alert fires" has a row for each alert of the plain rules file and the chart's
    PrometheusRule, and none for an alert neither ships."""
    helm = ROOT / "helm"
    shipped = set()
    for rules in (helm / "whatsapp-usage-exporter-alerts.rules.yaml",
                  helm / "whatsapp-usage-exporter" / "files" / "alerts.yaml"):
        shipped |= set(re.findall(r"^\s*- alert: (\w+)", rules.read_text(encoding="utf-8"), re.M))
    table = section(README.read_text(encoding="utf-8"), "Troubleshooting").split(
        "### When an alert fires\n", 1)[1]
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`(WhatsApp\w+)`", row.split("|")[1])}
    assert listed == shipped
