package pgtest

import (
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// Plans collects the plans PostgreSQL's auto_explain sends to a session as notices (with
// auto_explain.log_level = notice): set a connection config's OnNotice to its OnNotice. Tests
// use it to assert which plan a statement got, nested trigger statements included when
// auto_explain.log_nested_statements is on. Safe for concurrent use.
type Plans struct {
	mu    sync.Mutex
	plans []string
}

// OnNotice is a pgconn.NoticeHandler that keeps the notices carrying a plan.
func (p *Plans) OnNotice(_ *pgconn.PgConn, n *pgconn.Notice) {
	if strings.Contains(n.Message, "Query Text:") {
		p.mu.Lock()
		p.plans = append(p.plans, n.Message)
		p.mu.Unlock()
	}
}

// All returns the plans collected so far.
func (p *Plans) All() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.plans...)
}

// Take returns the plans collected since the last Take and forgets them.
func (p *Plans) Take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.plans
	p.plans = nil
	return out
}
