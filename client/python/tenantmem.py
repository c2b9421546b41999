"""A small Python client of tenantmem, with no third-party dependencies (urllib only).

For teams moving from llmemory: the router client :class:`TenantMem` has llmemory's method
names and, where they make sense, its parameters and result shapes (``add_document``,
``search``, ``list_documents``, ``get_document``, ``delete_document``, ``delete_documents``,
``get_statistics``). The one difference everywhere: there is no ``owner_id`` parameter. The
tenant is the API key's, and nothing a call passes can select another one.

:class:`TenantMemAdmin` is a helper for the provisioning API (admin token): create tenants,
issue and revoke keys, suspend, resume and delete, set limits, and register and manage
placements.

Errors are :class:`TenantMemError` subclasses carrying the server's ``status``, ``code``,
``message`` and ``field``. Requests answered 503 or 429 are retried, honouring Retry-After, at
most ``max_retries`` times and never waiting longer than ``max_retry_wait`` seconds at once;
the server answers those only when it did nothing, so retrying a write is safe.

    admin = TenantMemAdmin("http://127.0.0.1:8081", admin_token)
    created = admin.create_tenant("acme", tier="schema")
    memory = TenantMem("http://127.0.0.1:8080", created.api_key)
    memory.add_document("wiki-42", "Runbook", "markdown", "We deploy on Tuesdays.")
    for hit in memory.search("when do we deploy?", limit=5):
        print(hit.score, hit.content)
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

__all__ = [
    "TenantMem", "TenantMemAdmin", "TenantMemError", "ValidationError", "AuthenticationError",
    "ForbiddenError", "NotFoundError", "DocumentNotFoundError", "ConflictError", "PayloadTooLargeError",
    "RateLimitError", "UnavailableError", "ServerError", "DocumentAddResult", "Document", "DocumentChunk",
    "DocumentWithChunks", "DocumentListResult", "DeleteResult", "SearchResult", "SearchResults",
    "OwnerStatistics", "Tenant", "Placement", "APIKey", "IssuedKey", "TenantCreated",
]

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT = 30.0
DEFAULT_RETRY_WAIT_MIN = 0.5

DateLike = Union[_dt.datetime, _dt.date, str]


# Errors ---------------------------------------------------------------------------------------


class TenantMemError(Exception):
    """An answer other than 2xx: the server's error body with the HTTP status.

    ``code`` is the machine-readable code ("not_found", "invalid_input", ...); ``field`` names
    the offending input field of a 400 or 413; ``retry_after`` is the Retry-After header in
    seconds (503 and 429), or None; ``request_id`` is the key to the server's log lines.
    """

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None,
                 retry_after: Optional[float] = None, request_id: Optional[str] = None,
                 method: str = "", path: str = ""):
        super().__init__(f"tenantmem: {method} {path}: {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.request_id = request_id


class ValidationError(TenantMemError):
    """400 invalid_input: ``field`` names the field (as llmemory's ValidationError)."""


class AuthenticationError(TenantMemError):
    """401: missing, unknown or revoked key, or a deleted tenant's."""


class ForbiddenError(TenantMemError):
    """403: the tenant is suspended."""


class NotFoundError(TenantMemError):
    """404: also for another tenant's document id, exactly like a missing one."""


DocumentNotFoundError = NotFoundError  # llmemory's name


class ConflictError(TenantMemError):
    """409: the tenant already exists (code already_exists) or is in the wrong state (conflict)."""


class PayloadTooLargeError(TenantMemError):
    """413: the body or a field (named in ``field``) is over its limit."""


class RateLimitError(TenantMemError):
    """429: ``retry_after`` says when to try again (llmemory's name)."""


class UnavailableError(TenantMemError):
    """503: nothing was done; ``retry_after`` says when to try again."""


class ServerError(TenantMemError):
    """500 and other server errors; the message carries a request id."""


_ERRORS_BY_STATUS = {
    400: ValidationError, 401: AuthenticationError, 403: ForbiddenError, 404: NotFoundError,
    409: ConflictError, 413: PayloadTooLargeError, 429: RateLimitError, 503: UnavailableError,
}


def _error_class(status: int) -> type:
    if status in _ERRORS_BY_STATUS:
        return _ERRORS_BY_STATUS[status]
    return ServerError if status >= 500 else TenantMemError


# Results --------------------------------------------------------------------------------------


def _parse_time(v: Optional[str]) -> Optional[_dt.datetime]:
    if v is None:
        return None
    # Python 3.9/3.10 fromisoformat takes neither "Z" nor more than 6 fractional digits.
    v = v.replace("Z", "+00:00")
    head, sep, rest = v.partition(".")
    if sep:
        n = 0
        while n < len(rest) and rest[n].isdigit():
            n += 1
        v = head + "." + (rest[:n] + "000000")[:6] + rest[n:]
    return _dt.datetime.fromisoformat(v)


def _build(cls, data: Dict[str, Any], times: Sequence[str] = ()):
    """Builds a dataclass from an answer, ignoring fields this client does not know yet."""
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in data.items() if k in names}
    for t in times:
        if t in kw:
            kw[t] = _parse_time(kw[t])
    return cls(**kw)


@dataclass
class DocumentAddResult:
    """The answer of add_document. ``created`` is False when the document with the same
    ``id_at_origin`` was replaced (llmemory's upsert)."""
    document_id: str
    chunks_created: int = 0
    embeddings_created: int = 0
    embeddings_pending: int = 0
    created_at: Optional[_dt.datetime] = None
    updated_at: Optional[_dt.datetime] = None
    created: bool = True


@dataclass
class Document:
    """A stored document, without its content (that lives in its chunks)."""
    document_id: str
    document_name: str = ""
    document_type: str = ""
    id_at_origin: Optional[str] = None
    document_date: Optional[_dt.datetime] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    content_bytes: int = 0
    chunk_count: int = 0
    created_at: Optional[_dt.datetime] = None
    updated_at: Optional[_dt.datetime] = None


_DOC_TIMES = ("document_date", "created_at", "updated_at")


@dataclass
class DocumentChunk:
    """A stored chunk: level 0 chunks are embedded and searched, level 1 are their parents."""
    chunk_id: str
    parent_chunk_id: Optional[str] = None
    chunk_index: int = 0
    chunk_level: int = 0
    content: str = ""
    content_hash: str = ""
    token_count: int = 0
    metadata: Dict[str, Any] = field(default_factory=dict)
    has_embedding: bool = False


@dataclass
class DocumentWithChunks:
    """The answer of get_document, shaped like llmemory's: the document, its chunks (None unless
    asked for) and its chunk count."""
    document: Document
    chunks: Optional[List[DocumentChunk]] = None
    chunk_count: int = 0


@dataclass
class DocumentListResult:
    documents: List[Document]
    total: int
    limit: int
    offset: int


@dataclass
class DeleteResult:
    deleted_count: int
    deleted_document_ids: List[str]


@dataclass
class SearchResult:
    """One hit, a leaf chunk. ``score`` is on one scale per list, higher is better."""
    chunk_id: str
    document_id: str
    content: str = ""
    score: float = 0.0
    document_name: str = ""
    chunk_index: int = 0
    similarity: Optional[float] = None
    text_rank: Optional[float] = None
    rrf_score: Optional[float] = None
    rerank_score: Optional[float] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    parent_chunks: List[Dict[str, Any]] = field(default_factory=list)
    document_type: Optional[str] = None
    document_metadata: Optional[Dict[str, Any]] = None
    id_at_origin: Optional[str] = None
    document_date: Optional[_dt.datetime] = None


class SearchResults(list):
    """The hits of a search: a list of :class:`SearchResult` (as llmemory returns), with the
    answer's ``search_type``, ``took_ms``, ``degraded`` (a hybrid search that ran on text alone
    because the embedding provider failed, or a reranker that failed) and ``degraded_reasons``
    (which: ``embedding_unavailable``, ``rerank_unavailable``)."""

    def __init__(self, results: List[SearchResult], search_type: str, took_ms: float, degraded: bool,
                 degraded_reasons: Optional[List[str]] = None):
        super().__init__(results)
        self.search_type = search_type
        self.took_ms = took_ms
        self.degraded = degraded
        self.degraded_reasons = list(degraded_reasons or [])


@dataclass
class OwnerStatistics:
    """llmemory's statistics, plus the embedding queue. ``document_type_breakdown`` is None
    unless asked for (llmemory's include_breakdown)."""
    document_count: int
    chunk_count: int
    total_size_bytes: int
    document_type_breakdown: Optional[Dict[str, int]] = None
    embeddings_pending: int = 0
    embeddings_failed: int = 0


@dataclass
class Tenant:
    tenant_id: str
    tier: str
    status: str
    schema_name: str = ""
    database_name: Optional[str] = None
    placement: str = ""
    migration_version: int = 0
    created_at: Optional[_dt.datetime] = None
    updated_at: Optional[_dt.datetime] = None


@dataclass
class Placement:
    """A PostgreSQL server that holds tenants: ``state`` is active, draining or disabled."""
    name: str
    state: str
    tiers: List[str] = field(default_factory=list)
    tenants: int = 0
    description: str = ""
    host: str = ""
    port: int = 0
    database: str = ""
    max_tenants: int = 0
    created_at: Optional[_dt.datetime] = None
    updated_at: Optional[_dt.datetime] = None


@dataclass
class APIKey:
    key_id: str
    tenant_id: str
    created_at: Optional[_dt.datetime] = None
    revoked_at: Optional[_dt.datetime] = None
    delegate: bool = False
    """The key may act for tenants strictly below its own (``TenantMem(..., act_as=...)``)."""
    create_descendants: bool = False
    """The router creates a missing descendant (shared tier) on the key's first use of it."""


@dataclass
class IssuedKey(APIKey):
    """A new key; ``api_key`` is the clear key, shown this once."""
    api_key: str = ""


@dataclass
class TenantCreated:
    tenant: Tenant
    key: IssuedKey

    @property
    def api_key(self) -> str:
        """The clear API key of the new tenant."""
        return self.key.api_key


# Transport ------------------------------------------------------------------------------------


def _date_param(v: Optional[DateLike]) -> Optional[str]:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        return v.isoformat()
    return v.isoformat()  # a date: the server takes YYYY-MM-DD (a whole day as an upper bound)


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(int(value)))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime
        when = parsedate_to_datetime(value)
        return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


HEADER_ACT_AS = "Tenantmem-Act-As"
"""The router header naming the tenant a delegate key acts for."""


class _Client:
    def __init__(self, base_url: str, token: str, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
                 retry_wait_min: float = DEFAULT_RETRY_WAIT_MIN, user_agent: str = "tenantmem-python-client",
                 act_as: Optional[str] = None):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url {base_url!r} must be an http or https URL")
        if not token or any(c.isspace() for c in token):
            raise ValueError("token must be non-empty and contain no white space")
        if act_as is not None and (not act_as or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in act_as)):
            raise ValueError("act_as must be a tenant id (non-empty, no white space or control characters)")
        self._act_as = act_as
        self._base = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.max_retry_wait = max_retry_wait
        self.retry_wait_min = retry_wait_min
        self._agent = user_agent
        self._sleep = time.sleep  # tests replace it

    def _call(self, method: str, segments: Sequence[str], query: Optional[Dict[str, Any]] = None,
              body: Any = None) -> "tuple[int, Any]":
        path = "/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)
        url = self._base + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        data = None
        headers = {"Authorization": "Bearer " + self._token, "Accept": "application/json",
                   "User-Agent": self._agent}
        if self._act_as is not None:
            headers[HEADER_ACT_AS] = self._act_as
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as res:
                    raw = res.read()
                    return res.status, (json.loads(raw) if raw else None)
            except urllib.error.HTTPError as e:
                err = self._error(e, method, path)
                e.close()
            wait = self._retry_wait(err, attempt)
            if wait is None:
                raise err
            self._sleep(wait)
            attempt += 1

    def _retry_wait(self, err: TenantMemError, attempt: int) -> Optional[float]:
        """Seconds to wait before retrying err, or None when it is not retried."""
        if err.status not in (429, 503) or attempt >= self.max_retries:
            return None
        if err.retry_after is not None:
            return err.retry_after if err.retry_after <= self.max_retry_wait else None
        return min(self.retry_wait_min * (2 ** attempt), self.max_retry_wait)

    @staticmethod
    def _error(e: urllib.error.HTTPError, method: str, path: str) -> TenantMemError:
        raw = e.read(64 * 1024)
        code, message, fld = "", "", None
        try:
            body = json.loads(raw)["error"]
            code, message, fld = body["code"], body["message"], body.get("field")
        except (ValueError, KeyError, TypeError):
            message = raw[:200].decode("utf-8", "replace").strip() or (e.reason or "")
        if not code:
            code = {400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                    409: "conflict", 413: "payload_too_large", 429: "rate_limited",
                    503: "unavailable"}.get(e.code, "internal" if e.code >= 500 else "invalid_input")
        return _error_class(e.code)(e.code, code, message, fld, _retry_after(e.headers.get("Retry-After")),
                                    e.headers.get("X-Request-Id"), method, path)

    def ready(self) -> bool:
        """True when the server answers GET /readyz with 200."""
        try:
            self._call("GET", ["readyz"])
            return True
        except TenantMemError:
            return False


# The router -----------------------------------------------------------------------------------


class TenantMem(_Client):
    """A client of the tenant router, with one tenant's API key.

    ``base_url`` is the router's address ("http://127.0.0.1:8080"); ``timeout`` is per attempt
    in seconds; 503 and 429 answers are retried up to ``max_retries`` times, waiting for
    Retry-After when it is at most ``max_retry_wait`` seconds.
    """

    def __init__(self, base_url: str, api_key: str, **kwargs: Any):
        """``act_as`` (keyword), when given, is a tenant strictly below the key's own
        ("acme/u-42" for a key of "acme") that every call acts for, sent as the Tenantmem-Act-As
        header; the key must have been issued with ``delegate=True``. The router answers
        ForbiddenError (403) for a key without that scope, NotFoundError (404, one answer for
        all) for a tenant that is not a registered, active descendant, and ValidationError (400)
        for an id that is not valid as written."""
        super().__init__(base_url, api_key, **kwargs)

    def act_as(self, tenant_id: Optional[str]) -> "TenantMem":
        """A client with the same key and settings acting for ``tenant_id`` (None: the key's
        own tenant)."""
        c = copy.copy(self)
        if tenant_id is not None and (not tenant_id or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in tenant_id)):
            raise ValueError("act_as must be a tenant id (non-empty, no white space or control characters)")
        c._act_as = tenant_id
        return c

    def add_document(self, id_at_origin: Optional[str], document_name: str, document_type: str, content: str,
                     document_date: Optional[DateLike] = None, metadata: Optional[Dict[str, Any]] = None,
                     chunking_config: Optional[Dict[str, int]] = None) -> DocumentAddResult:
        """Adds a document, or replaces the tenant's document with the same ``id_at_origin``
        (None: always a new document). ``chunking_config`` takes parent_size, child_size,
        parent_overlap and child_overlap, in tokens."""
        body: Dict[str, Any] = {"document_name": document_name, "document_type": document_type, "content": content}
        if id_at_origin is not None:
            body["id_at_origin"] = id_at_origin
        if metadata is not None:
            body["metadata"] = metadata
        if document_date is not None:
            body["document_date"] = _date_param(document_date)
        if chunking_config:
            body["chunking"] = chunking_config
        status, res = self._call("POST", ["v1", "documents"], body=body)
        out = _build(DocumentAddResult, res, ("created_at", "updated_at"))
        out.created = status == 201
        return out

    def search(self, query_text: str, search_type: str = "hybrid", limit: int = 10,
               id_at_origin: Optional[str] = None, id_at_origins: Optional[List[str]] = None,
               metadata_filter: Optional[Dict[str, Any]] = None, date_from: Optional[DateLike] = None,
               date_to: Optional[DateLike] = None, include_parent_context: bool = False,
               alpha: Optional[float] = None, document_types: Optional[List[str]] = None,
               include_documents: bool = False, query_embedding: Optional[List[float]] = None,
               chunk_metadata_filter: Optional[Dict[str, Any]] = None, fusion: Optional[str] = None,
               recall_target: Optional[float] = None, rerank: bool = False,
               rerank_top_k: Optional[int] = None) -> SearchResults:
        """Searches the tenant's chunks: "vector", "text" or "hybrid". A date bound given as a
        date covers its whole day. ``metadata_filter`` matches the document's metadata,
        ``chunk_metadata_filter`` the chunk's own (section, email_part, speakers, ...).
        ``fusion`` is how hybrid search merges its two lists ("score", "rrf" or "dbsf");
        ``recall_target`` (0.5-1, 1 = exact) the vector index's effort; ``rerank`` re-scores the
        top ``rerank_top_k`` candidates with the server's reranker (the answer says
        ``degraded_reasons == ["rerank_unavailable"]`` when it failed)."""
        body: Dict[str, Any] = {"query_text": query_text, "search_type": search_type, "limit": limit}
        optional = {"id_at_origin": id_at_origin, "id_at_origins": id_at_origins, "metadata_filter": metadata_filter,
                    "date_from": _date_param(date_from), "date_to": _date_param(date_to), "alpha": alpha,
                    "document_types": document_types, "query_embedding": query_embedding,
                    "chunk_metadata_filter": chunk_metadata_filter, "fusion": fusion, "recall_target": recall_target,
                    "rerank_top_k": rerank_top_k}
        body.update({k: v for k, v in optional.items() if v is not None})
        if include_parent_context:
            body["include_parent_context"] = True
        if include_documents:
            body["include_documents"] = True
        if rerank:
            body["rerank"] = True
        _, res = self._call("POST", ["v1", "search"], body=body)
        return self._results(res)

    def quick_search(self, q: str, limit: Optional[int] = None) -> SearchResults:
        """GET /v1/search?q=: a hybrid search."""
        _, res = self._call("GET", ["v1", "search"], {"q": q, "limit": limit})
        return self._results(res)

    @staticmethod
    def _results(res: Dict[str, Any]) -> SearchResults:
        hits = [_build(SearchResult, r, ("document_date",)) for r in res.get("results") or []]
        return SearchResults(hits, res.get("search_type", ""), res.get("took_ms", 0.0), bool(res.get("degraded")),
                             res.get("degraded_reasons"))

    def list_documents(self, limit: int = 20, offset: int = 0, document_type: Optional[str] = None,
                       order_by: str = "created_at", order_desc: bool = True,
                       metadata_filter: Optional[Dict[str, Any]] = None,
                       id_at_origin: Optional[str] = None) -> DocumentListResult:
        """A page of the tenant's documents (llmemory's parameters)."""
        query = {"limit": limit, "offset": offset, "document_type": document_type, "order_by": order_by,
                 "order": "desc" if order_desc else "asc", "id_at_origin": id_at_origin,
                 "metadata_filter": json.dumps(metadata_filter) if metadata_filter is not None else None}
        _, res = self._call("GET", ["v1", "documents"], query)
        docs = [_build(Document, d, _DOC_TIMES) for d in res.get("documents") or []]
        return DocumentListResult(docs, res["total"], res["limit"], res["offset"])

    def get_document(self, document_id: str, include_chunks: bool = False) -> DocumentWithChunks:
        """One document (NotFoundError when missing or another tenant's)."""
        _, res = self._call("GET", ["v1", "documents", str(document_id)],
                            {"include_chunks": "true"} if include_chunks else None)
        doc = _build(Document, res, _DOC_TIMES)
        chunks = [_build(DocumentChunk, c) for c in res.get("chunks") or []] if include_chunks else None
        return DocumentWithChunks(doc, chunks, doc.chunk_count)

    def delete_document(self, document_id: str) -> None:
        """Deletes one document (NotFoundError when there is none)."""
        self._call("DELETE", ["v1", "documents", str(document_id)])

    def delete_documents(self, document_ids: Optional[List[str]] = None,
                         metadata_filter: Optional[Dict[str, Any]] = None) -> DeleteResult:
        """Deletes documents by id (unknown ids are skipped) or by metadata filter."""
        body: Dict[str, Any] = {}
        if document_ids is not None:
            body["document_ids"] = [str(d) for d in document_ids]
        if metadata_filter is not None:
            body["metadata_filter"] = metadata_filter
        _, res = self._call("POST", ["v1", "documents", "delete"], body=body)
        return DeleteResult(res["deleted_count"], res["deleted_document_ids"])

    def get_statistics(self, include_breakdown: bool = False) -> OwnerStatistics:
        """Counts the tenant's documents, chunks and bytes, and its queued embeddings."""
        _, res = self._call("GET", ["v1", "statistics"])
        st = _build(OwnerStatistics, res)
        if not include_breakdown:
            st.document_type_breakdown = None
        return st

    def search_history(self, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """The tenant's recent searches, newest first."""
        _, res = self._call("GET", ["v1", "search", "history"], {"limit": limit})
        return res["history"]

    def embedding_status(self) -> Dict[str, int]:
        """{"pending": n, "failed": n}: the tenant's embedding jobs."""
        _, res = self._call("GET", ["v1", "embeddings", "status"])
        return res

    def retry_embeddings(self) -> int:
        """Queues the tenant's failed embedding jobs again; returns how many."""
        _, res = self._call("POST", ["v1", "embeddings", "retry"])
        return res["queued"]


# The provisioning API -------------------------------------------------------------------------


_TENANT_TIMES = ("created_at", "updated_at")
_KEY_TIMES = ("created_at", "revoked_at")
_PLACEMENT_TIMES = ("created_at", "updated_at")


class TenantMemAdmin(_Client):
    """A client of the provisioning API, with the admin token."""

    def __init__(self, base_url: str, admin_token: str, **kwargs: Any):
        super().__init__(base_url, admin_token, **kwargs)

    def create_tenant(self, tenant_id: str, tier: str = "shared", placement: Optional[str] = None) -> TenantCreated:
        """Creates a tenant and its first API key (ConflictError when the id is taken)."""
        body = {"tenant_id": tenant_id, "tier": tier}
        if placement is not None:
            body["placement"] = placement
        _, res = self._call("POST", ["v1", "tenants"], body=body)
        return TenantCreated(_build(Tenant, res["tenant"], _TENANT_TIMES), _build(IssuedKey, res["api_key"], _KEY_TIMES))

    def get_tenant(self, tenant_id: str) -> Tenant:
        _, res = self._call("GET", ["v1", "tenants", tenant_id])
        return _build(Tenant, res, _TENANT_TIMES)

    def list_tenants(self, limit: Optional[int] = None, after: Optional[str] = None) -> "tuple[List[Tenant], Optional[str]]":
        """One page of tenants in id order, and the ``after`` of the next page (None at the end)."""
        _, res = self._call("GET", ["v1", "tenants"], {"limit": limit, "after": after})
        return [_build(Tenant, t, _TENANT_TIMES) for t in res["tenants"]], res.get("next_after")

    def iter_tenants(self, page_size: Optional[int] = None) -> Iterator[Tenant]:
        """Every tenant in id order, page by page."""
        after = None
        while True:
            page, after = self.list_tenants(page_size, after)
            yield from page
            if not after:
                return

    def delete_tenant(self, tenant_id: str) -> None:
        """Deletes a tenant and all its data."""
        self._call("DELETE", ["v1", "tenants", tenant_id])

    def suspend_tenant(self, tenant_id: str) -> Tenant:
        """The router answers 403 (ForbiddenError) until the tenant is resumed."""
        _, res = self._call("POST", ["v1", "tenants", tenant_id, "suspend"])
        return _build(Tenant, res["tenant"], _TENANT_TIMES)

    def resume_tenant(self, tenant_id: str) -> Tenant:
        _, res = self._call("POST", ["v1", "tenants", tenant_id, "resume"])
        return _build(Tenant, res["tenant"], _TENANT_TIMES)

    def issue_key(self, tenant_id: str, delegate: bool = False, create_descendants: bool = False) -> IssuedKey:
        """Another API key of the tenant; the clear key is in the result only. ``delegate``: the
        key may act for tenants below its own; ``create_descendants`` (needs ``delegate``): the
        router creates a missing descendant in the shared tier on first use."""
        body = None
        if delegate or create_descendants:
            body = {"delegate": delegate, "create_descendants": create_descendants}
        _, res = self._call("POST", ["v1", "tenants", tenant_id, "keys"], body=body)
        return _build(IssuedKey, res, _KEY_TIMES)

    def create_descendants(self, parent: str, tenant_ids: List[str]) -> Dict[str, List[str]]:
        """Registers shared-tier tenants below ``parent`` (1 to 1000, no keys of their own);
        returns ``{"created": [...], "existing": [...]}``."""
        _, res = self._call("POST", ["v1", "tenants", parent, "descendants"], body={"tenant_ids": list(tenant_ids)})
        return res

    def list_keys(self, tenant_id: str) -> List[APIKey]:
        _, res = self._call("GET", ["v1", "tenants", tenant_id, "keys"])
        return [_build(APIKey, k, _KEY_TIMES) for k in res["keys"]]

    def revoke_key(self, tenant_id: str, key_id: str) -> None:
        self._call("DELETE", ["v1", "tenants", tenant_id, "keys", key_id])

    def get_limits(self, tenant_id: str) -> Dict[str, Any]:
        """The tenant's limit overrides; None takes the router's default."""
        _, res = self._call("GET", ["v1", "tenants", tenant_id, "limits"])
        return res["limits"]

    def set_limits(self, tenant_id: str, **limits: Optional[float]) -> Dict[str, Any]:
        """Replaces the tenant's overrides (requests_per_second, burst, max_concurrent,
        max_documents, max_chunks, max_content_bytes); one left out or None takes the router's
        default, 0 means no limit. Every router applies them at once."""
        _, res = self._call("PUT", ["v1", "tenants", tenant_id, "limits"], body=dict(limits))
        return res["limits"]

    def add_placement(self, name: str, host: str, port: int, database: str, max_tenants: Optional[int] = None,
                      tiers: Optional[List[str]] = None, description: Optional[str] = None,
                      router_password: Optional[str] = None) -> Placement:
        """Registers a PostgreSQL server that may hold tenants (UnavailableError when the
        provisioner cannot reach it, ConflictError when the name or endpoint is taken)."""
        body: Dict[str, Any] = {"name": name, "host": host, "port": port, "database": database}
        optional = {"max_tenants": max_tenants, "tiers": tiers, "description": description,
                    "router_password": router_password}
        body.update({k: v for k, v in optional.items() if v is not None})
        _, res = self._call("POST", ["v1", "placements"], body=body)
        return _build(Placement, res, _PLACEMENT_TIMES)

    def list_placements(self) -> List[Placement]:
        _, res = self._call("GET", ["v1", "placements"])
        return [_build(Placement, p, _PLACEMENT_TIMES) for p in res["placements"]]

    def get_placement(self, name: str) -> Placement:
        _, res = self._call("GET", ["v1", "placements", name])
        return _build(Placement, res, _PLACEMENT_TIMES)

    def drain_placement(self, name: str) -> Placement:
        """No new tenants go there; the ones it holds stay served."""
        return self._placement_state(name, "drain")

    def disable_placement(self, name: str) -> Placement:
        """No new tenants, and the routers serve none of its tenants."""
        return self._placement_state(name, "disable")

    def activate_placement(self, name: str) -> Placement:
        return self._placement_state(name, "activate")

    def _placement_state(self, name: str, action: str) -> Placement:
        _, res = self._call("POST", ["v1", "placements", name, action])
        return _build(Placement, res["placement"], _PLACEMENT_TIMES)

    def remove_placement(self, name: str) -> None:
        """Unregisters an empty placement (ConflictError while it holds tenants)."""
        self._call("DELETE", ["v1", "placements", name])
