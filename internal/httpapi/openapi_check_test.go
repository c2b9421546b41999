package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/paths"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// specChecker validates every exchange of a test's HTTP client against an OpenAPI description
// (with libopenapi-validator), and records what the exchanges covered: which (path, method,
// status), which parameters and body members, which error codes. finish fails the test when a
// route of the server is missing from the description, when something the description lists
// was never exercised, or when an exchange did not conform.
type specChecker struct {
	t     *testing.T
	name  string
	model *v3.Document
	v     validator.Validator
	// raw is the description as plain maps, for the coverage lists.
	raw map[string]any

	mu       sync.Mutex
	statuses map[string]map[string]bool // "METHOD /path" -> statuses seen
	params   map[string]map[string]bool // "METHOD /path" -> parameters and body members seen
	codes    map[string]bool            // error codes seen
	problems []string
	requests int
}

func newSpecChecker(t *testing.T, name string, spec []byte) *specChecker {
	t.Helper()
	doc, err := libopenapi.NewDocument(spec)
	require.NoError(t, err, name)
	m, err := doc.BuildV3Model()
	require.NoError(t, err, name)
	v, errs := validator.NewValidator(doc)
	require.Empty(t, errs, name)
	ok, verrs := v.ValidateDocument()
	for _, e := range verrs {
		t.Errorf("%s: the description is not valid OpenAPI 3.1: %s: %s", name, e.Message, e.Reason)
	}
	require.True(t, ok, name)
	var raw map[string]any
	require.NoError(t, yaml.Unmarshal(spec, &raw), name)
	return &specChecker{t: t, name: name, model: &m.Model, v: v, raw: raw,
		statuses: map[string]map[string]bool{}, params: map[string]map[string]bool{}, codes: map[string]bool{}}
}

// wrap routes every request of the test server's client through the checker.
func (s *specChecker) wrap(srv *httptest.Server) {
	c := srv.Client()
	c.Transport = &checkingTransport{next: c.Transport, s: s}
}

type checkingTransport struct {
	next http.RoundTripper
	s    *specChecker
}

func (ct *checkingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		reqBody = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	res, err := ct.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resBody, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(resBody))
	ct.s.check(req, reqBody, res, resBody)
	return res, nil
}

// check validates one exchange and records what it covered.
func (s *specChecker) check(req *http.Request, reqBody []byte, res *http.Response, resBody []byte) {
	clone := func() *http.Request {
		r := req.Clone(req.Context())
		r.Body = io.NopCloser(bytes.NewReader(reqBody))
		// echo's catch-all below /v1/documents/ (see routeAliases) serves a document id with an
		// unescaped "/": OpenAPI describes that as one {document_id} value, escaped.
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v1/documents/"); ok && strings.Contains(rest, "/") {
			r.URL.Path = "/v1/documents/" + rest
			r.URL.RawPath = "/v1/documents/" + url.PathEscape(rest)
		}
		return r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	where := fmt.Sprintf("%s %s -> %d", req.Method, req.URL.RequestURI(), res.StatusCode)
	_, errs, specPath := paths.FindPath(clone(), s.model, nil)
	if specPath == "" || len(errs) > 0 {
		s.problems = append(s.problems, where+": no operation of the description matches")
		return
	}
	op := req.Method + " " + specPath
	if s.statuses[op] == nil {
		s.statuses[op] = map[string]bool{}
		s.params[op] = map[string]bool{}
	}
	s.statuses[op][fmt.Sprint(res.StatusCode)] = true
	// A matched path carries every path parameter.
	for _, name := range s.declaredParams(specPath, req.Method) {
		if s.isPathParam(specPath, name) {
			s.params[op][name] = true
		}
	}

	// The response must conform whatever the request was; the request must conform when the
	// server accepted it (a request the server takes must be one the description allows).
	r := &http.Response{StatusCode: res.StatusCode, Header: res.Header, Body: io.NopCloser(bytes.NewReader(resBody)), Request: req}
	if ok, errs := s.v.ValidateHttpResponse(clone(), r); !ok {
		s.problems = append(s.problems, where+": response: "+describe(errs)+"\n    body: "+truncate(string(resBody)))
	}
	if res.StatusCode < 300 {
		if ok, errs := s.v.ValidateHttpRequest(clone()); !ok {
			s.problems = append(s.problems, where+": request accepted by the server but not by the description: "+describe(errs))
		}
		// Parameters the route does not declare would be refused by the server; one it
		// accepted must be declared.
		for k := range req.URL.Query() {
			if !slices.Contains(s.declaredParams(specPath, req.Method), k) {
				s.problems = append(s.problems, where+": query parameter "+k+" is not in the description")
			}
		}
		// So must a request header the server acted on (Tenantmem-Act-As, Idempotency-Key),
		// beyond those of HTTP itself and the security scheme.
		for k := range req.Header {
			k = http.CanonicalHeaderKey(k)
			if !transportHeaders[k] && !slices.Contains(s.declaredParams(specPath, req.Method), k) {
				s.problems = append(s.problems, where+": request header "+k+" is not in the description")
			}
		}
	}
	for k := range req.URL.Query() {
		s.params[op][k] = true
	}
	for k := range req.Header {
		s.params[op][http.CanonicalHeaderKey(k)] = true
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(reqBody, &members) == nil {
		for k := range members {
			s.params[op]["body."+k] = true
		}
	}
	if res.StatusCode >= 400 {
		var eb struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if json.Unmarshal(resBody, &eb) == nil && eb.Error.Code != "" {
			s.codes[eb.Error.Code] = true
		}
	}
}

// transportHeaders are request headers of HTTP itself (and the security scheme's
// Authorization), which OpenAPI does not list as parameters.
var transportHeaders = map[string]bool{
	"Authorization": true, "Content-Type": true, "Content-Length": true, "Accept": true,
	"Accept-Encoding": true, "User-Agent": true,
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "\n    - %s: %s", e.Message, e.Reason)
		for _, se := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n      %s: %s", se.FieldPath, se.Reason)
		}
	}
	return b.String()
}

func truncate(s string) string {
	if len(s) > 600 {
		return s[:600] + "..."
	}
	return s
}

// node walks the raw description; a "$ref" to "#/..." is followed.
func (s *specChecker) node(v any) map[string]any {
	m, _ := v.(map[string]any)
	for m != nil {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var cur any = s.raw
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[part]
		}
		m, _ = cur.(map[string]any)
	}
	return m
}

// operation returns the raw operation and its path item.
func (s *specChecker) operation(specPath, method string) (op, item map[string]any) {
	item = s.node(s.node(s.raw["paths"])[specPath])
	return s.node(item[strings.ToLower(method)]), item
}

// declaredParams lists the parameters of an operation (its path item's included), by name, and
// "body.<member>" for each top-level member of its JSON request body.
func (s *specChecker) declaredParams(specPath, method string) []string {
	op, item := s.operation(specPath, method)
	var out []string
	for _, list := range []any{item["parameters"], op["parameters"]} {
		ps, _ := list.([]any)
		for _, p := range ps {
			pm := s.node(p)
			name := pm["name"].(string)
			if pm["in"] == "header" {
				name = http.CanonicalHeaderKey(name)
			}
			out = append(out, name)
		}
	}
	if rb := s.node(op["requestBody"]); rb != nil {
		schema := s.node(s.node(s.node(rb["content"])["application/json"])["schema"])
		for k := range s.node(schema["properties"]) {
			out = append(out, "body."+k)
		}
	}
	return out
}

// isPathParam reports whether name is a path parameter of the path.
func (s *specChecker) isPathParam(specPath, name string) bool {
	return strings.Contains(specPath, "{"+name+"}")
}

// routeAliases maps echo routes that have no path of their own in the description to the path
// that describes them. "/v1/documents/*" only catches document ids with an unescaped "/" (400
// document_id), which OpenAPI describes as a value of {document_id}.
var routeAliases = map[string]string{"/v1/documents/*": "/v1/documents/{}"}

var pathParam = regexp.MustCompile(`\{[^}]*\}|:[a-z_]+`)

// finish checks the server's routes against the description and the description against what
// the test exercised, and reports every problem. It logs the coverage.
func (s *specChecker) finish(e *echo.Echo) {
	t := s.t
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	described := map[string]bool{}
	var ops []string
	for p, item := range s.node(s.raw["paths"]) {
		for m := range s.node(item) {
			switch m {
			case "get", "put", "post", "delete", "patch":
				described[strings.ToUpper(m)+" "+pathParam.ReplaceAllString(p, "{}")] = true
				ops = append(ops, strings.ToUpper(m)+" "+p)
			}
		}
	}
	sort.Strings(ops)
	// (a) Every route of the server is described.
	for _, r := range e.Routes() {
		p := r.Path
		if a, ok := routeAliases[p]; ok {
			p = a
		}
		key := r.Method + " " + pathParam.ReplaceAllString(p, "{}")
		if !described[key] {
			t.Errorf("%s: route %s %s is served but not in the description", s.name, r.Method, r.Path)
		}
	}
	// (b) Every (path, method, status), parameter and body member of the description was
	// exercised, and every error code seen.
	var nStatuses, nParams int
	for _, op := range ops {
		method, p, _ := strings.Cut(op, " ")
		raw, _ := s.operation(p, method)
		for code := range s.node(s.node(raw["responses"])) {
			nStatuses++
			if !s.statuses[op][code] {
				t.Errorf("%s: %s answers %s in the description, but no test exchange did", s.name, op, code)
			}
		}
		for _, name := range s.declaredParams(p, method) {
			nParams++
			if !s.params[op][name] {
				t.Errorf("%s: %s: parameter %s is in the description, but no test exchange sent it", s.name, op, name)
			}
		}
	}
	errSchema := s.node(s.node(s.node(s.node(s.node(s.node(s.raw["components"])["schemas"])["Error"])["properties"])["error"])["properties"])
	enum, _ := s.node(errSchema["code"])["enum"].([]any)
	for _, c := range enum {
		if !s.codes[c.(string)] {
			t.Errorf("%s: error code %s is in the description, but no test exchange got it", s.name, c)
		}
	}
	// (c) Every exchange conformed.
	for _, p := range s.problems {
		t.Errorf("%s: %s", s.name, p)
	}
	t.Logf("%s: %d exchanges; %d routes served, %d operations, %d (operation, status) pairs, %d parameters and body members, %d error codes: all exercised unless reported above",
		s.name, s.requests, len(e.Routes()), len(ops), nStatuses, nParams, len(enum))
}
