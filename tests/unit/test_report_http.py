"""Validation reports over the metrics port: only report files, never anything else."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from controller.drivers.folders import ReportFolder
from controller.metrics import MetricsServer, serve_http
from controller.spec import names_a_version

SECRET = b"the state folder's neighbour: never served"


@pytest.fixture
def folder(tmp_path: Path) -> ReportFolder:
    (tmp_path / "secret.html").write_bytes(SECRET)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "secret.html").write_bytes(SECRET)
    reports = ReportFolder(tmp_path / "state" / "reports", urls=True)
    files = {"report.html": b"<h1>v1</h1>", "report.md": b"# v1", "recall.png": b"png"}
    assert reports.write_report("test/products", "v1", files) == "/reports/test/products/v1.html"
    reports.write_report("test/a.b", "2.0.html", {"report.html": b"dotted"})
    return reports


@pytest.fixture
def server(folder: ReportFolder) -> Iterator[MetricsServer]:
    served = serve_http(
        0, host="127.0.0.1", registry=CollectorRegistry(), documents=folder.document
    )
    try:
        yield served
    finally:
        served.close()


def get(server: MetricsServer, path: str) -> tuple[int, bytes, http.client.HTTPResponse]:
    """The raw request line as given: no client-side normalisation of ``..`` or escapes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", "localhost")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read(), response
    finally:
        conn.close()


def test_a_report_is_served_as_html_or_markdown(server: MetricsServer) -> None:
    status, body, response = get(server, "/reports/test/products/v1.html")
    assert (status, body) == (200, b"<h1>v1</h1>")
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert "default-src 'none'" in (response.getheader("Content-Security-Policy") or "")
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    status, body, response = get(server, "/reports/test/products/v1.md?x=1")
    assert (status, body) == (200, b"# v1")
    assert response.getheader("Content-Type") == "text/markdown; charset=utf-8"
    assert get(server, "/reports/test/a.b/2.0.html.html")[:2] == (200, b"dotted")
    assert get(server, "/metrics")[0] == 200, "the metrics are served beside"


@pytest.mark.parametrize(
    "path",
    [
        "/reports/test/products/v2.html",  # no such version
        "/reports/test/products/v1.png",  # not a report kind
        "/reports/test/products/recall.png",
        "/reports/test/products/v1",
        "/reports/test/products/v1.html/",
        "/reports/test/products",
        "/reports/test.products/v1/report.html",  # the folder layout is not the URL
        "/reports/TEST/products/v1.html",  # not a namespace
        "/reports/../secret.html",
        "/reports/../../secret.html",
        "/reports/test/../../secret.html",
        "/reports/test/products/../../../secret.html",
        "/reports/test/products/..%2f..%2f..%2fsecret.html",
        "/reports/test/products/%2e%2e%2f%2e%2e%2fsecret.html",
        "/reports/%2e%2e/%2e%2e/secret.html",
        "/reports/test/..%2F..%2F/secret.html",
        "/reports/test/products/%252e%252e.html",
        "/reports//secret.html",
        "/reports/test//v1.html",
        "/reports/test/products/.html",
        "/reports/test/products/...html",
        "/reports/test/products/v1%00.html",
        "/reports/test/products/v1.html%00",
        "/reports/test/products\\..\\..\\secret.html",
        "/reports/test/products/v1.html/../../../../secret.html",
    ],
)
def test_anything_but_a_report_path_is_404_and_never_another_file(
    server: MetricsServer, path: str
) -> None:
    status, body, _ = get(server, path)
    assert status == 404, path
    assert SECRET not in body and b"v1" not in body


def test_a_link_out_of_the_report_folder_is_not_followed(
    folder: ReportFolder, server: MetricsServer, tmp_path: Path
) -> None:
    evil = folder.root / "test.evil" / "v1"
    evil.mkdir(parents=True)
    (evil / "report.html").symlink_to(tmp_path / "secret.html")
    assert get(server, "/reports/test/evil/v1.html")[0] == 404
    (folder.root / "test.inside").symlink_to(folder.root / "test.products")
    assert get(server, "/reports/test/inside/v1.html")[:2] == (200, b"<h1>v1</h1>")


def test_without_a_report_source_the_reports_are_not_served(folder: ReportFolder) -> None:
    served = serve_http(0, host="127.0.0.1", registry=CollectorRegistry())
    try:
        assert get(served, "/reports/test/products/v1.html")[0] == 404
    finally:
        served.close()


def test_a_local_report_folder_records_the_file_path(tmp_path: Path) -> None:
    local = ReportFolder(tmp_path / "reports")
    where = local.write_report("test/products", "v1", {"report.html": b"x"})
    assert Path(where) == (tmp_path / "reports/test.products/v1/report.html").resolve()
    assert local.document("/reports/test/products/v1.html") is not None


@pytest.mark.parametrize(
    ("parts", "valid"),
    [
        (("test", "products", "v1"), True),
        (("test", "a.b", "1.0-rc_1"), True),
        (("..", "products", "v1"), False),
        (("test", "..", "v1"), False),
        (("test", "products", ".."), False),
        (("test", "products", "."), False),
        (("test", "products", ""), False),
        (("test", "products", "a/b"), False),
        (("test\n", "products", "v1"), False),
        (("test", "products", "v1\n"), False),
        (("te st", "products", "v1"), False),
        (("test", "products", "v" * 129), False),
    ],
)
def test_names_a_version(parts: tuple[str, str, str], valid: bool) -> None:
    assert names_a_version(*parts) is valid


def test_a_dot_dot_version_never_reaches_a_file_above(
    folder: ReportFolder, server: MetricsServer
) -> None:
    """``...html`` is version ``..``: without the name checks it would read reports/report.html."""
    (folder.root / "report.html").write_bytes(SECRET)
    (folder.root / "test.products" / "report.html").write_bytes(SECRET)
    for path in ("/reports/test/products/...html", "/reports/test/products/.html"):
        status, body, _ = get(server, path)
        assert status == 404 and SECRET not in body, path
