package httpapi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tenantmem/tenantmem/internal/memory"
)

// importIdle is how long a bulk import may go without a line before its connection's deadlines
// pass. Every line pushes them on, so an import of any size runs as long as lines arrive.
const importIdle = 5 * time.Minute

// MaxImportErrors bounds the failed lines an import response lists; FailedCount counts all.
const MaxImportErrors = 1000

// ImportLineError is one line of a bulk import that was refused.
type ImportLineError struct {
	// Line is the 1-based line number.
	Line  int     `json:"line"`
	Error Problem `json:"error"`
}

// ImportResponse is the body of POST /v1/documents/import.
type ImportResponse struct {
	// Documents counts the lines stored; Created and Updated split them (an id_at_origin that
	// existed is replaced).
	Documents         int `json:"documents"`
	Created           int `json:"created"`
	Updated           int `json:"updated"`
	ChunksCreated     int `json:"chunks_created"`
	EmbeddingsCreated int `json:"embeddings_created"`
	EmbeddingsPending int `json:"embeddings_pending"`
	// FailedCount counts the refused lines; Failed lists the first MaxImportErrors of them.
	FailedCount int               `json:"failed_count"`
	Failed      []ImportLineError `json:"failed"`
	TookMS      float64           `json:"took_ms"`
}

// importDocuments reads JSON lines, one document each (the body of POST /v1/documents: content,
// or chunks with or without vectors), and adds them one by one as they arrive: the body is never
// held whole. A line with bad input is refused and listed with its field, and the import goes on;
// empty lines are skipped. Any other failure (the tenant's quota reached, the tenant suspended or
// moved, the database gone) stops the import with that error, whose message says how many lines
// were stored: documents with an id_at_origin can be sent again safely, they are replaced.
func (r *router) importDocuments(c echo.Context) error {
	if err := allowQuery(c); err != nil {
		return err
	}
	start := time.Now()
	ctx := c.Request().Context()
	rc := http.NewResponseController(c.Response().Writer)
	sc := bufio.NewScanner(c.Request().Body)
	sc.Buffer(make([]byte, 0, 64<<10), int(r.cfg.BodyLimit)+1)
	res := ImportResponse{Failed: []ImportLineError{}}
	rules := RouterErrorRules()
	line := 0
	for sc.Scan() {
		line++
		// Every line pushes the connection's deadlines on: an import lasts as long as it moves.
		at := time.Now().Add(importIdle)
		_ = rc.SetReadDeadline(at)
		_ = rc.SetWriteDeadline(at)
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var req DocumentAddRequest
		err := decodeLocated(raw, &req)
		var p memory.DocumentAddParams
		if err == nil {
			p, err = req.params()
		}
		if err == nil {
			var out memory.DocumentAddResult
			out, err = r.cfg.Engine.AddDocument(ctx, r.scope(c), p)
			if err == nil {
				res.Documents++
				if out.Created {
					res.Created++
				} else {
					res.Updated++
				}
				res.ChunksCreated += out.ChunksCreated
				res.EmbeddingsCreated += out.EmbeddingsCreated
				res.EmbeddingsPending += out.EmbeddingsPending
				r.queued(c, out.EmbeddingsPending)
				continue
			}
		}
		prob := MapError(err, rules)
		// A line with bad input is refused alone; anything else stops the import where it is,
		// a quota among them (every later line would be refused too).
		if prob.Code == CodeQuotaExceeded || prob.Status != http.StatusBadRequest && prob.Status != http.StatusRequestEntityTooLarge {
			if prob.Status >= 500 && prob.Status != http.StatusServiceUnavailable {
				// Logged with its details by the error handler; the client gets a generic 500.
				return fmt.Errorf("import stopped at line %d (%d documents stored before it): %w", line, res.Documents, err)
			}
			// 503 (tenant moving, timeout), 403 (suspended), ...: say where to resume.
			prob.Message = fmt.Sprintf("import stopped at line %d (%d documents stored before it): %s", line, res.Documents, prob.Message)
			if prob.RetryAfter > 0 {
				c.Response().Header().Set("Retry-After", fmt.Sprint(max(1, int(prob.RetryAfter.Seconds()))))
			}
			return c.JSON(prob.Status, ErrorBody{Error: prob})
		}
		res.FailedCount++
		if len(res.Failed) < MaxImportErrors {
			res.Failed = append(res.Failed, ImportLineError{Line: line, Error: prob})
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return WithMessage(&http.MaxBytesError{Limit: r.cfg.BodyLimit},
				fmt.Sprintf("import stopped at line %d (%d documents stored before it): the line is longer than %d bytes",
					line+1, res.Documents, r.cfg.BodyLimit))
		}
		return fmt.Errorf("import stopped at line %d (%d documents stored before it): read: %w", line+1, res.Documents, err)
	}
	res.TookMS = float64(time.Since(start).Microseconds()) / 1000
	return c.JSON(http.StatusOK, res)
}
