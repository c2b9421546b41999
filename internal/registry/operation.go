package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// OperationState is the state of a long-running operation.
type OperationState string

// The operation states.
const (
	OperationRunning   OperationState = "running"
	OperationSucceeded OperationState = "succeeded"
	OperationFailed    OperationState = "failed"
)

// Operation kinds recorded by this code base. Other kinds use their own names with the same
// functions.
const (
	// OperationMigrate is `provisioner migrate`: Done and Total count schemas.
	OperationMigrate = "migrate"
	// OperationBackup, OperationRestore and OperationMove are a tenant's backup, restore and
	// move (the CLI's, the provisioning API's and the promotion policy's): Done and Total count
	// the rows of its tables read or written (a move's snapshot copy; Done reaches Total before
	// its catch-up rounds).
	OperationBackup  = "backup"
	OperationRestore = "restore"
	OperationMove    = "move"
)

// Operation is a long-running operation's progress row (control table operations). Any process
// that runs one records it with [StartOperation], reports with [UpdateOperation] and ends it with
// [FinishOperation]; the console lists them with [ListOperations].
type Operation struct {
	ID      int64          `json:"operation_id"`
	Kind    string         `json:"kind"`
	Subject string         `json:"subject"`
	State   OperationState `json:"state"`
	Done    int64          `json:"done"`
	Total   int64          `json:"total"`
	Failed  int64          `json:"failed"`
	// Unit names what Done and Total count: schemas, bytes, rows.
	Unit   string `json:"unit"`
	Error  string `json:"error,omitempty"`
	Runner string `json:"runner"`
	// UpdatedAt is the last report; a running operation whose UpdatedAt is old has lost its
	// process ([Operation.Stalled]).
	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Stalled reports whether a running operation has not reported for longer than after at now.
func (o Operation) Stalled(now time.Time, after time.Duration) bool {
	return o.State == OperationRunning && now.Sub(o.UpdatedAt) > after
}

// Percent is Done/Total in percent (0 while Total is unknown).
func (o Operation) Percent() float64 {
	if o.Total <= 0 {
		return 0
	}
	return 100 * float64(min(o.Done, o.Total)) / float64(o.Total)
}

var operationKind = regexp.MustCompile(`\A[a-z][a-z0-9_-]{0,31}\z`)

// OperationStartParams describes a new operation.
type OperationStartParams struct {
	Kind    string
	Subject string
	Total   int64
	Unit    string
}

// Runner names this process: host and process id.
func Runner() string {
	host, _ := os.Hostname()
	return host + ":" + strconv.Itoa(os.Getpid())
}

// StartOperation records a running operation and returns its id.
func StartOperation(ctx context.Context, db DBTX, p OperationStartParams) (int64, error) {
	if !operationKind.MatchString(p.Kind) {
		return 0, &FieldError{Field: "kind", Message: fmt.Sprintf("%q must match %s", p.Kind, operationKind)}
	}
	var id int64
	err := db.QueryRow(ctx, `INSERT INTO tenantmem_control.operations (kind, subject, total, unit, runner)
		VALUES ($1, $2, $3, $4, $5) RETURNING operation_id`,
		p.Kind, truncate(p.Subject, 300), max(p.Total, 0), truncate(p.Unit, 32), truncate(Runner(), 200)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("registry: start operation: %w", err)
	}
	return id, nil
}

// UpdateOperation records a running operation's progress (and refreshes its updated_at, also
// when nothing moved: that is its heartbeat).
func UpdateOperation(ctx context.Context, db DBTX, id, done, total, failed int64) error {
	_, err := db.Exec(ctx, `UPDATE tenantmem_control.operations SET done = $2, total = $3, failed = $4, updated_at = now()
		WHERE operation_id = $1 AND state = 'running'`, id, max(done, 0), max(total, 0), max(failed, 0))
	if err != nil {
		return fmt.Errorf("registry: update operation: %w", err)
	}
	return nil
}

// FinishOperation ends an operation: failed when opErr is set (its message is kept), else
// succeeded.
func FinishOperation(ctx context.Context, db DBTX, id, done, total, failed int64, opErr error) error {
	state, msg := OperationSucceeded, ""
	if opErr != nil {
		state, msg = OperationFailed, truncate(opErr.Error(), 2000)
	}
	_, err := db.Exec(ctx, `UPDATE tenantmem_control.operations SET done = $2, total = $3, failed = $4, state = $5,
			error = $6, updated_at = now(), finished_at = now()
		WHERE operation_id = $1 AND state = 'running'`, id, max(done, 0), max(total, 0), max(failed, 0), string(state), msg)
	if err != nil {
		return fmt.Errorf("registry: finish operation: %w", err)
	}
	return nil
}

// OperationListParams selects operations, newest first.
type OperationListParams struct {
	// Running selects the running ones only (through a partial index).
	Running bool
	// Limit bounds the result; 0 means 50.
	Limit int
}

// ListOperations returns operations, newest first.
func ListOperations(ctx context.Context, db DBTX, p OperationListParams) ([]Operation, error) {
	if p.Limit <= 0 {
		p.Limit = 50
	}
	rows, err := db.Query(ctx, `SELECT operation_id, kind, subject, state, done, total, failed, unit, error, runner,
			started_at, updated_at, finished_at
		FROM tenantmem_control.operations WHERE (NOT $1 OR state = 'running') ORDER BY operation_id DESC LIMIT $2`,
		p.Running, p.Limit)
	if err != nil {
		return nil, fmt.Errorf("registry: list operations: %w", err)
	}
	ops, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Operation])
	if err != nil {
		return nil, fmt.Errorf("registry: list operations: %w", err)
	}
	return ops, nil
}

// GetOperation returns one operation, or ErrNotFound.
func GetOperation(ctx context.Context, db DBTX, id int64) (Operation, error) {
	rows, err := db.Query(ctx, `SELECT operation_id, kind, subject, state, done, total, failed, unit, error, runner,
			started_at, updated_at, finished_at
		FROM tenantmem_control.operations WHERE operation_id = $1`, id)
	if err != nil {
		return Operation{}, fmt.Errorf("registry: get operation: %w", err)
	}
	op, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Operation])
	if errors.Is(err, pgx.ErrNoRows) {
		return Operation{}, fmt.Errorf("registry: operation %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Operation{}, fmt.Errorf("registry: get operation: %w", err)
	}
	return op, nil
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
