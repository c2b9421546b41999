// Package dberr classifies PostgreSQL and driver errors for the rest of tenantmem: which ones mean
// the database cannot serve right now (the connection was lost, the server is shutting down,
// starting, out of disk, memory or connection slots, read-only after a failover), so that every
// server answers them with 503 and Retry-After instead of a 400 or a 500, and which of them happened
// before a statement reached the server, so that a caller may retry it without any risk of doing
// the work twice.
//
// Errors are matched by type and SQLSTATE, never by message text.
package dberr

import (
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// unavailableCodes are the SQLSTATEs of a server that cannot serve for now, beyond class 08
// (connection exception), which is matched as a whole.
var unavailableCodes = map[string]bool{
	pgerrcode.AdminShutdown:                   true, // 57P01: terminated by an administrator (pg_terminate_backend, fast shutdown)
	pgerrcode.CrashShutdown:                   true, // 57P02: another backend crashed
	pgerrcode.CannotConnectNow:                true, // 57P03: starting up, shutting down, in recovery
	"57P04":                                   true, // database_dropped
	"57P05":                                   true, // idle_session_timeout
	pgerrcode.InsufficientResources:           true, // 53000
	pgerrcode.DiskFull:                        true, // 53100
	pgerrcode.OutOfMemory:                     true, // 53200
	pgerrcode.TooManyConnections:              true, // 53300
	pgerrcode.ConfigurationLimitExceeded:      true, // 53400
	pgerrcode.SystemError:                     true, // 58000
	pgerrcode.IOError:                         true, // 58030: e.g. a write to a full or failing disk
	pgerrcode.ReadOnlySQLTransaction:          true, // 25006: a standby promoted to nothing yet, or a read-only server
	pgerrcode.LockNotAvailable:                true, // 55P03: lock_timeout expired
	pgerrcode.SerializationFailure:            true, // 40001: retry the transaction
	pgerrcode.DeadlockDetected:                true, // 40P01: retry the transaction
	pgerrcode.IdleInTransactionSessionTimeout: true, // 25P03
}

// Unavailable reports whether err means the database cannot serve the request now but may later:
// a lost or refused connection (including the driver's unexpected EOF, a reset, a closed
// connection or pool), a server shutting down, starting or crashed, out of disk, memory or
// connection slots, read-only, a lock or serialization conflict to retry. Statement timeouts
// (57014) and context errors are not included: callers tell those apart themselves.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgerrcode.IsConnectionException(pgErr.Code) || unavailableCodes[pgErr.Code]
	}
	return ConnectionLost(err)
}

// ConnectionLost reports whether err is a failure of the connection itself rather than an answer
// of the server: it could not be opened, it was closed or reset, or it ended in the middle of a
// message. The connection is unusable afterwards (pgx closes it, and a pool drops it).
func ConnectionLost(err error) bool {
	if err == nil {
		return false
	}
	var (
		ce    *pgconn.ConnectError
		opErr *net.OpError
	)
	switch {
	case errors.As(err, &ce), errors.As(err, &opErr):
		return true
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, pgconn.ErrConnClosed), errors.Is(err, puddle.ErrClosedPool),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH):
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// The server ends the session with these: the connection is gone too.
		return pgerrcode.IsConnectionException(pgErr.Code) || pgErr.Code == pgerrcode.AdminShutdown ||
			pgErr.Code == pgerrcode.CrashShutdown || pgErr.Code == pgerrcode.CannotConnectNow ||
			pgErr.Code == pgerrcode.TooManyConnections || pgErr.Code == "57P05" ||
			pgErr.Code == pgerrcode.IdleInTransactionSessionTimeout
	}
	return false
}

// RetryableBeforeWork reports whether a failure to open a transaction (acquiring a connection,
// BEGIN, and statements that only set transaction-local state) may be retried on another
// connection: the connection was lost or refused, so nothing the caller asked for has happened.
// It is never true for a failure after the caller's own statements ran, nor for a COMMIT whose
// outcome is unknown.
func RetryableBeforeWork(err error) bool {
	return ConnectionLost(err) || pgconn.SafeToRetry(err)
}
