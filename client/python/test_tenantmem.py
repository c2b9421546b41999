"""Tests of tenantmem.py. The live tests need a running router and provisioning API, named by
TENANTMEM_TEST_ROUTER_URL, TENANTMEM_TEST_ADMIN_URL and TENANTMEM_TEST_ADMIN_TOKEN; `make test`
runs them through python_test.go, which starts both servers. Without those variables the live
tests fail rather than skip."""

import datetime as dt
import http.server
import json
import os
import threading
import time
import unittest

import tenantmem
from tenantmem import TenantMem, TenantMemAdmin


def live_env():
    names = ("TENANTMEM_TEST_ROUTER_URL", "TENANTMEM_TEST_ADMIN_URL", "TENANTMEM_TEST_ADMIN_TOKEN")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise AssertionError("set %s (python_test.go does)" % ", ".join(missing))
    return [os.environ[n] for n in names]


def eventually(what, cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def raises(exc_type, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type:
        return True
    except tenantmem.TenantMemError:
        return False
    return False


class ReadmeSession(unittest.TestCase):
    """The README's curl session, through the Python client, against the real servers."""

    def test_readme_session(self):
        router_url, admin_url, admin_token = live_env()
        admin = TenantMemAdmin(admin_url, admin_token)
        self.assertTrue(admin.ready())

        created = admin.create_tenant("acme/team-1", tier="schema")
        self.assertEqual("active", created.tenant.status)
        self.assertRegex(created.api_key, r"^tm_[a-z0-9]{16}_[0-9a-f]{64}$")
        small = admin.create_tenant("small-co", tier="shared")
        with self.assertRaises(tenantmem.ConflictError) as cm:
            admin.create_tenant("small-co")
        self.assertEqual("already_exists", cm.exception.code)

        memory = TenantMem(router_url, created.api_key)
        self.assertTrue(memory.ready())
        content = "# Deploys\n\nWe deploy on Tuesdays, after the database backup has finished."
        added = memory.add_document("wiki-42", "Runbook", "markdown", content,
                                    document_date=dt.date(2024, 5, 1), metadata={"space": "ops"})
        self.assertTrue(added.created)
        self.assertGreater(added.chunks_created, 0)
        self.assertGreater(added.embeddings_created, 0)
        again = memory.add_document("wiki-42", "Runbook", "markdown", content,
                                    document_date=dt.date(2024, 5, 1), metadata={"space": "ops"})
        self.assertFalse(again.created)
        self.assertEqual(added.document_id, again.document_id)
        lunch = memory.add_document(None, "Lunch", "text", "Lunch is served at noon on the third floor.",
                                    metadata={"space": "social"}, chunking_config={"child_size": 64})

        for mode in ("vector", "text", "hybrid"):
            hits = memory.search("when do we deploy?", search_type=mode, limit=5)
            self.assertEqual(mode, hits.search_type)
            self.assertTrue(hits, mode)
            self.assertEqual(added.document_id, hits[0].document_id, mode)
        hits = memory.search("deploy backup", limit=3, id_at_origin="wiki-42", id_at_origins=["wiki-42"],
                             metadata_filter={"space": "ops"}, date_from=dt.date(2024, 5, 1),
                             date_to=dt.datetime(2024, 5, 2, tzinfo=dt.timezone.utc), include_parent_context=True,
                             alpha=0.7, document_types=["markdown"], include_documents=True)
        self.assertEqual("Runbook", hits[0].document_name)
        self.assertEqual("wiki-42", hits[0].id_at_origin)
        self.assertEqual({"space": "ops"}, hits[0].document_metadata)
        self.assertEqual(dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc), hits[0].document_date)
        # The search request's other fields: fusion, recall target, the chunk's own metadata.
        for fusion in ("score", "rrf", "dbsf"):
            hits = memory.search("deploy backup", limit=3, fusion=fusion, alpha=0.5, recall_target=1.0)
            self.assertEqual("hybrid", hits.search_type)
            self.assertEqual(added.document_id, hits[0].document_id, fusion)
            self.assertFalse(hits.degraded)
            self.assertEqual([], hits.degraded_reasons)
        hits = memory.search("deploy", search_type="text", chunk_metadata_filter={"section": "Deploys"})
        self.assertEqual([added.document_id], sorted({h.document_id for h in hits}))
        self.assertEqual([], memory.search("deploy", search_type="text", chunk_metadata_filter={"section": "Nowhere"}))
        with self.assertRaises(tenantmem.ValidationError) as cm:
            memory.search("deploy", fusion="average")
        self.assertEqual("fusion", cm.exception.field)
        with self.assertRaises(tenantmem.ValidationError) as cm:
            memory.search("deploy", recall_target=0.1)
        self.assertEqual("recall_target", cm.exception.field)
        # This deployment has no reranker: the request says so, naming the field.
        with self.assertRaises(tenantmem.ValidationError) as cm:
            memory.search("deploy", rerank=True, rerank_top_k=5)
        self.assertEqual("rerank", cm.exception.field)
        self.assertTrue(memory.quick_search("backup", limit=3))
        history = memory.search_history(limit=2)
        self.assertEqual("backup", history[0]["query_text"])

        st = memory.get_statistics()
        self.assertEqual(2, st.document_count)
        self.assertIsNone(st.document_type_breakdown)
        self.assertEqual({"markdown": 1, "text": 1}, memory.get_statistics(include_breakdown=True).document_type_breakdown)
        self.assertEqual({"pending": 0, "failed": 0}, memory.embedding_status())
        self.assertEqual(0, memory.retry_embeddings())

        page = memory.list_documents(limit=10, order_by="updated_at")
        self.assertEqual(2, page.total)
        self.assertEqual(lunch.document_id, page.documents[0].document_id)
        page = memory.list_documents(limit=1, document_type="markdown", order_by="document_name", order_desc=False,
                                     metadata_filter={"space": "ops"}, id_at_origin="wiki-42")
        self.assertEqual(1, page.total)
        self.assertEqual("wiki-42", page.documents[0].id_at_origin)
        doc = memory.get_document(added.document_id, include_chunks=True)
        self.assertEqual("Runbook", doc.document.document_name)
        self.assertEqual(doc.chunk_count, len(doc.chunks))
        self.assertIsNone(memory.get_document(added.document_id).chunks)

        # Bad input names the field.
        with self.assertRaises(tenantmem.ValidationError) as cm:
            memory.add_document(None, "empty", "text", "")
        self.assertEqual("content", cm.exception.field)
        with self.assertRaises(tenantmem.ValidationError) as cm:
            memory.get_document("../etc")
        self.assertEqual("document_id", cm.exception.field)

        # Another tenant's key: 404 exactly like a missing id.
        other = TenantMem(router_url, small.api_key)
        with self.assertRaises(tenantmem.DocumentNotFoundError) as theirs:
            other.get_document(added.document_id)
        with self.assertRaises(tenantmem.DocumentNotFoundError) as missing:
            other.get_document("00000000-0000-0000-0000-000000000000")
        self.assertEqual((missing.exception.status, missing.exception.code, missing.exception.message),
                         (theirs.exception.status, theirs.exception.code, theirs.exception.message))
        self.assertEqual(0, other.delete_documents(document_ids=[added.document_id]).deleted_count)
        self.assertEqual(0, other.get_statistics().document_count)

        deleted = memory.delete_documents(metadata_filter={"space": "social"})
        self.assertEqual([lunch.document_id], deleted.deleted_document_ids)
        memory.delete_document(added.document_id)
        with self.assertRaises(tenantmem.NotFoundError):
            memory.delete_document(added.document_id)

        # Limits and placements.
        self.assertIsNone(admin.get_limits("small-co")["max_documents"])
        self.assertEqual(100, admin.set_limits("small-co", max_documents=100, requests_per_second=None)["max_documents"])
        with self.assertRaises(tenantmem.ValidationError) as cm:
            admin.set_limits("small-co", max_chunks=-1)
        self.assertEqual("max_chunks", cm.exception.field)
        placements = admin.list_placements()
        self.assertEqual(["local"], [p.name for p in placements])
        local = admin.get_placement("local")
        self.assertEqual("active", local.state)
        self.assertEqual(2, local.tenants)
        self.assertEqual("draining", admin.drain_placement("local").state)
        self.assertEqual("active", admin.activate_placement("local").state)
        with self.assertRaises(tenantmem.ConflictError):
            admin.remove_placement("local")
        with self.assertRaises(tenantmem.NotFoundError):
            admin.get_placement("nowhere")
        with self.assertRaises(tenantmem.ValidationError) as cm:
            admin.add_placement("Bad Name", "127.0.0.1", 5432, "x")
        self.assertEqual("placement", cm.exception.field)
        impatient = TenantMemAdmin(admin_url, admin_token, max_retries=0)
        with self.assertRaises(tenantmem.UnavailableError):
            impatient.add_placement("p2", "127.0.0.1", 1, "tenantmem", tiers=["schema"], max_tenants=5)
        self.assertEqual(["local"], [p.name for p in admin.list_placements()])

        tenants, next_after = admin.list_tenants(limit=100)
        self.assertEqual(["acme/team-1", "small-co"], [t.tenant_id for t in tenants])
        self.assertIsNone(next_after)
        self.assertEqual(["acme/team-1", "small-co"], [t.tenant_id for t in admin.iter_tenants(page_size=1)])
        self.assertEqual(created.tenant.schema_name, admin.get_tenant("acme/team-1").schema_name)

        self.assertEqual("suspended", admin.suspend_tenant("acme/team-1").status)
        eventually("403 while suspended", lambda: raises(tenantmem.ForbiddenError, memory.get_statistics))
        admin.resume_tenant("acme/team-1")
        eventually("200 after the resume", lambda: not raises(tenantmem.TenantMemError, memory.get_statistics))

        second = admin.issue_key("acme/team-1")
        self.assertEqual(2, len(admin.list_keys("acme/team-1")))
        admin.revoke_key("acme/team-1", created.key.key_id)
        eventually("401 for the revoked key", lambda: raises(tenantmem.AuthenticationError, memory.get_statistics))
        memory2 = TenantMem(router_url, second.api_key)
        self.assertEqual(0, memory2.get_statistics().document_count)

        admin.delete_tenant("acme/team-1")
        eventually("401 after the delete", lambda: raises(tenantmem.AuthenticationError, memory2.get_statistics))
        with self.assertRaises(tenantmem.NotFoundError):
            admin.delete_tenant("acme/team-1")
        with self.assertRaises(tenantmem.AuthenticationError):
            TenantMem(router_url, admin_token).get_statistics()


class ActAs(unittest.TestCase):
    """Delegated keys: a key of acme acts for acme/u-1 with act_as, and reaches nothing else."""

    def test_act_as(self):
        router_url, admin_url, admin_token = live_env()
        admin = TenantMemAdmin(admin_url, admin_token)
        # The README session counts the tenants: leave none behind.
        for t in ("py-acme/u-1", "py-acme/u-2", "py-acmex/u-1", "py-acme"):
            self.addCleanup(admin.delete_tenant, t)
        parent = admin.create_tenant("py-acme", tier="shared")
        admin.create_tenant("py-acmex/u-1", tier="shared")
        made = admin.create_descendants("py-acme", ["py-acme/u-1", "py-acme/u-2"])
        self.assertEqual(["py-acme/u-1", "py-acme/u-2"], made["created"])
        key = admin.issue_key("py-acme", delegate=True)
        self.assertTrue(key.delegate)
        self.assertFalse(key.create_descendants)
        with self.assertRaises(tenantmem.ValidationError) as cm:
            admin.issue_key("py-acme", create_descendants=True)
        self.assertEqual("create_descendants", cm.exception.field)

        u1 = TenantMem(router_url, key.api_key, act_as="py-acme/u-1")
        added = u1.add_document(None, "n", "text", "a delegated okapi note")
        hits = u1.search("okapi", search_type="text")
        self.assertEqual([added.document_id], [r.document_id for r in hits])
        own = TenantMem(router_url, key.api_key)
        self.assertEqual(0, own.get_statistics().document_count)
        self.assertEqual(0, own.act_as("py-acme/u-2").get_statistics().document_count)
        self.assertEqual(1, own.act_as("py-acme/u-1").get_statistics().document_count)

        with self.assertRaises(tenantmem.NotFoundError) as missing:
            own.act_as("py-acme/u-404").get_statistics()
        with self.assertRaises(tenantmem.NotFoundError) as foreign:
            own.act_as("py-acmex/u-1").get_statistics()
        self.assertEqual((missing.exception.code, str(missing.exception.args[:1])),
                         (foreign.exception.code, str(foreign.exception.args[:1])))
        self.assertEqual(str(missing.exception).replace(missing.exception.request_id or "", ""),
                         str(foreign.exception).replace(foreign.exception.request_id or "", ""))
        for bad in ("py-acme/../py-acmex/u-1", "py-acme//u-1", "PY-ACME/u-1/", "py-acme%2Fu-1"):
            with self.assertRaises(tenantmem.ValidationError) as cm:
                own.act_as(bad).get_statistics()
            self.assertEqual(tenantmem.HEADER_ACT_AS, cm.exception.field)
        with self.assertRaises(ValueError):
            own.act_as("py-acme/u-1\r\nX-Evil: 1")
        with self.assertRaises(tenantmem.ForbiddenError):
            TenantMem(router_url, parent.api_key, act_as="py-acme/u-1").get_statistics()


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next scripted answer (the last one repeats)."""

    answers = []
    requests = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        type(self).requests.append((self.command, self.path, self.rfile.read(length).decode()))
        status, retry_after, body = type(self).answers[min(len(type(self).requests), len(type(self).answers)) - 1]
        self.send_response(status)
        if retry_after:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Request-Id", "req-1")
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


UNAVAILABLE = json.dumps({"error": {"code": "unavailable", "message": "retry later"}})
ADDED = json.dumps({"document_id": "d1", "chunks_created": 1, "embeddings_created": 1, "embeddings_pending": 0,
                    "created_at": "2024-05-01T10:00:00.123456789Z", "updated_at": "2024-05-01T10:00:00Z",
                    "a_field_from_a_newer_server": True})


class Retries(unittest.TestCase):
    """Retries of 503 and 429, against a scripted local server; waits are recorded, not slept."""

    def run_script(self, answers, **kwargs):
        Scripted.answers, Scripted.requests = answers, []
        server = http.server.HTTPServer(("127.0.0.1", 0), Scripted)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(lambda: (server.shutdown(), server.server_close()))
        memory = TenantMem("http://127.0.0.1:%d" % server.server_port, "tm_key", **kwargs)
        waits = []
        memory._sleep = waits.append
        try:
            return memory.add_document(None, "n", "text", "c"), None, waits
        except tenantmem.TenantMemError as e:
            return None, e, waits

    def test_cases(self):
        for given, answers, kwargs, tries, waits, status in [
            ("Retry-After is honoured", [(503, "2", UNAVAILABLE), (429, "1", UNAVAILABLE), (201, "", ADDED)], {}, 3, [2, 1], None),
            ("exponential without Retry-After", [(503, "", UNAVAILABLE), (503, "", UNAVAILABLE), (201, "", ADDED)], {}, 3, [0.5, 1.0], None),
            ("gives up after max_retries", [(503, "1", UNAVAILABLE)], {}, 4, [1, 1, 1], 503),
            ("a Retry-After beyond max_retry_wait is not waited for", [(503, "60", UNAVAILABLE)], {}, 1, [], 503),
            ("max_retries=0", [(503, "1", UNAVAILABLE)], {"max_retries": 0}, 1, [], 503),
            ("500 is not retried", [(500, "", '{"error": {"code": "internal", "message": "internal error"}}')], {}, 1, [], 500),
            ("a proxy's page", [(502, "", "<html>bad gateway</html>")], {}, 1, [], 502),
        ]:
            with self.subTest(given):
                res, err, got_waits = self.run_script(answers, **kwargs)
                self.assertEqual(tries, len(Scripted.requests))
                for req in Scripted.requests:
                    self.assertEqual(("POST", "/v1/documents"), req[:2])
                    self.assertEqual({"document_name": "n", "document_type": "text", "content": "c"}, json.loads(req[2]))
                self.assertEqual(waits, got_waits)
                if status is None:
                    self.assertIsNone(err)
                    self.assertTrue(res.created)
                    self.assertEqual(dt.datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=dt.timezone.utc), res.created_at)
                else:
                    self.assertEqual(status, err.status)
                    self.assertEqual("req-1", err.request_id)
                    self.assertTrue(err.message)
        _, err, _ = self.run_script([(503, "60", UNAVAILABLE)])
        self.assertIsInstance(err, tenantmem.UnavailableError)
        self.assertEqual(60, err.retry_after)
        _, err, _ = self.run_script([(502, "", "<html>bad gateway</html>")])
        self.assertIsInstance(err, tenantmem.ServerError)
        self.assertEqual(("internal", "<html>bad gateway</html>"), (err.code, err.message))

    def test_paths_are_escaped(self):
        Scripted.answers, Scripted.requests = [(200, "", json.dumps({"tenant_id": "acme/team 1", "tier": "shared", "status": "active"}))], []
        server = http.server.HTTPServer(("127.0.0.1", 0), Scripted)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(lambda: (server.shutdown(), server.server_close()))
        admin = TenantMemAdmin("http://127.0.0.1:%d/" % server.server_port, "admin-token-0123456789")
        self.assertEqual("acme/team 1", admin.get_tenant("acme/team 1").tenant_id)
        self.assertEqual("/v1/tenants/acme%2Fteam%201", Scripted.requests[0][1])

    def test_bad_configuration(self):
        for url, token in [("127.0.0.1:8080", "k"), ("ftp://h", "k"), ("http://h", ""), ("http://h", "a b")]:
            with self.assertRaises(ValueError):
                TenantMem(url, token)


if __name__ == "__main__":
    unittest.main()
