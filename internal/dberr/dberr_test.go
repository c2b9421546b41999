package dberr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
	"github.com/stretchr/testify/require"

	"github.com/tenantmem/tenantmem/internal/dberr"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return fmt.Errorf("memory: x: %w", &pgconn.PgError{Code: code}) }
	for _, tc := range []struct {
		given                    string
		when                     error
		unavailable, connectLost bool
	}{
		{"nil", nil, false, false},
		{"unexpected EOF", fmt.Errorf("memory: commit: %w", io.ErrUnexpectedEOF), true, true},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true, true},
		{"conn closed", pgconn.ErrConnClosed, true, true},
		{"closed pool", puddle.ErrClosedPool, true, true},
		{"admin shutdown", pg("57P01"), true, true},
		{"cannot connect now", pg("57P03"), true, true},
		{"too many connections", pg("53300"), true, true},
		{"connection failure", pg("08006"), true, true},
		{"disk full", pg("53100"), true, false},
		{"read only", pg("25006"), true, false},
		{"deadlock", pg("40P01"), true, false},
		{"statement timeout is not an outage", pg("57014"), false, false},
		{"unique violation", pg("23505"), false, false},
		{"cancelled context", context.Canceled, false, false},
		{"a plain error", errors.New("boom"), false, false},
	} {
		t.Run(tc.given, func(t *testing.T) {
			require.Equal(t, tc.unavailable, dberr.Unavailable(tc.when), "Unavailable")
			require.Equal(t, tc.connectLost, dberr.ConnectionLost(tc.when), "ConnectionLost")
			require.Equal(t, tc.connectLost, dberr.RetryableBeforeWork(tc.when), "RetryableBeforeWork")
		})
	}
}
