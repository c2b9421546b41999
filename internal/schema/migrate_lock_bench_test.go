package schema

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkMigrationReaderStall measures what a migration that needs a table's ACCESS EXCLUSIVE
// lock costs that table's readers while another session holds the table: a holder keeps the
// schema's chunks for 4 s, the migration starts 0.5 s in, and a reader runs a query on chunks
// every 20 ms throughout. It reports the reader's longest query (reader_max_ms) and when the
// migration finished (migration_s, from its start; the holder ends 3.5 s after it), for no
// lock timeout and for two bounds (docs/operations.md, Upgrades).
func BenchmarkMigrationReaderStall(b *testing.B) {
	for _, lt := range []time.Duration{-1, 2 * time.Second, 500 * time.Millisecond} {
		name := "none"
		if lt > 0 {
			name = lt.String()
		}
		b.Run("lock_timeout="+name, func(b *testing.B) {
			for i := range b.N {
				longest, took := readerStall(b, fmt.Sprintf("tenant_stall%d", i), lt)
				b.ReportMetric(float64(longest.Milliseconds()), "reader_max_ms")
				b.ReportMetric(took.Seconds(), "migration_s")
			}
		})
	}
}

func readerStall(b *testing.B, name string, lt time.Duration) (longest, took time.Duration) {
	ctx := context.Background()
	m, conn, _ := newLockingMigrator(b, name, MigratorConfig{LockTimeout: lt, LockAttempts: 100})
	release := holdChunks(b, connect(b, conn.Config()), name)
	reader := connect(b, conn.Config())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	var once sync.Once
	end := func() { once.Do(func() { close(stop) }) }
	defer end() // a failed assertion below still stops the reader
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			start := time.Now()
			var n int
			if err := reader.QueryRow(ctx, `SELECT count(*) FROM `+name+`.chunks`).Scan(&n); err != nil {
				b.Error(err)
				return
			}
			longest = max(longest, time.Since(start))
		}
	})
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := m.Up(ctx, TenantSet, name); done <- err }()
	time.Sleep(3500 * time.Millisecond)
	release()
	require.NoError(b, <-done)
	took = time.Since(start)
	time.Sleep(300 * time.Millisecond)
	end()
	wg.Wait()
	return longest, took
}
