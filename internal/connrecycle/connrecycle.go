// Package connrecycle bounds the server-side memory of pooled PostgreSQL connections that serve many
// schemas: the schema recycle limit. A PostgreSQL backend caches the catalog entries of every table and index it touches
// (about 190 KB per tenant schema of tenantmem under a full request mix) and never frees them, so a long-lived pooled
// connection that serves requests of thousands of schema-tier tenants grows to gigabytes. A
// [Recycler] counts the distinct schemas each connection served and has the pool close a connection
// once it served more than MaxSchemas, when it is released: its next use opens a fresh backend.
//
// It bounds memory, not the number of connections: a recycled connection is closed like any other
// (its socket too), so a cap on connections kept elsewhere (placement's connection budget, which
// takes a slot when a socket is dialled and gives it back when it is closed) gets its slot back.
// docs/scaling.md derives the default from measurements.
package connrecycle

import (
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultMaxSchemas is the default limit: at about 190 KB of catalog cache per schema a backend
// keeps under 100 MB of private memory, and a connection is replaced once every 500 or so requests
// when traffic is spread over thousands of schemas (docs/scaling.md).
const DefaultMaxSchemas = 500

// Recycler counts the distinct schemas each connection of a pool served. It is safe for concurrent
// use. The zero value is not usable; build one with [New].
type Recycler struct {
	max      int
	mu       sync.Mutex
	conns    map[*pgx.Conn]*served
	recycled atomic.Uint64
}

type served struct {
	schemas map[string]struct{}
	over    bool
}

// New returns a recycler of maxSchemas distinct schemas per connection; a negative maxSchemas
// never recycles (the connections still count), zero means DefaultMaxSchemas.
func New(maxSchemas int) *Recycler {
	if maxSchemas == 0 {
		maxSchemas = DefaultMaxSchemas
	}
	return &Recycler{max: maxSchemas, conns: map[*pgx.Conn]*served{}}
}

// Configure installs the recycler's hooks on a pool configuration: AfterRelease closes a
// connection over the limit, BeforeClose forgets a closed one. Hooks already set are kept and run
// first.
func (b *Recycler) Configure(pc *pgxpool.Config) {
	prevRelease, prevClose := pc.AfterRelease, pc.BeforeClose
	pc.AfterRelease = func(conn *pgx.Conn) bool {
		if prevRelease != nil && !prevRelease(conn) {
			return false
		}
		b.mu.Lock()
		s := b.conns[conn]
		over := s != nil && s.over
		b.mu.Unlock()
		if over {
			b.recycled.Add(1)
		}
		return !over
	}
	pc.BeforeClose = func(conn *pgx.Conn) {
		if prevClose != nil {
			prevClose(conn)
		}
		b.mu.Lock()
		delete(b.conns, conn)
		b.mu.Unlock()
	}
}

// Observe records that conn served schema. Pass it as memory.Scope.Observe.
func (b *Recycler) Observe(conn *pgx.Conn, schema string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.conns[conn]
	if s == nil {
		s = &served{schemas: map[string]struct{}{}}
		b.conns[conn] = s
	}
	if s.over {
		return
	}
	s.schemas[schema] = struct{}{}
	if b.max > 0 && len(s.schemas) > b.max {
		s.over, s.schemas = true, nil
	}
}

// Recycled counts the connections closed for being over the limit.
func (b *Recycler) Recycled() uint64 { return b.recycled.Load() }

// MaxSchemas is the limit: distinct schemas a connection serves before it is recycled
// (negative: never).
func (b *Recycler) MaxSchemas() int { return b.max }
