package archive

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
)

// Copy reads the tenant's rows from srcTx (a REPEATABLE READ transaction scoped to the source
// tenant, see [Snapshot]) and loads them into the target of p, streaming them through the
// archive format without compression: the same code as a backup followed by a restore, without
// the file. base provides the manifest fields other than the tables (tenant, versions); the
// returned manifest has the tables and counts of the source.
func Copy(ctx context.Context, srcTx pgx.Tx, ep ExportParams, base Manifest, p LoadParams) (Manifest, LoadResult, error) {
	tables, derived, err := Snapshot(ctx, srcTx, ep)
	if err != nil {
		return Manifest{}, LoadResult{}, err
	}
	m := base
	m.Tables, m.DerivedRows, m.KeyHashes = tables, derived, false
	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	go func() {
		err := func() error {
			w, err := NewWriter(pw, m, WriterOptions{Uncompressed: true})
			if err != nil {
				return err
			}
			if err := Export(ctx, srcTx, ep, w, nil); err != nil {
				w.Abort()
				return err
			}
			return w.Close()
		}()
		pw.CloseWithError(err) // nil: the reader sees EOF after the end frame
		exported <- err
	}()
	res, loadErr := func() (LoadResult, error) {
		r, err := NewReader(pr, ReaderOptions{Uncompressed: true})
		if err != nil {
			return LoadResult{}, err
		}
		defer r.Close()
		return Load(ctx, r, p)
	}()
	// Unblock the exporter if the load stopped early, then wait for it.
	pr.CloseWithError(errCopyAborted)
	exportErr := <-exported
	switch {
	case exportErr != nil && !errors.Is(exportErr, errCopyAborted):
		return m, res, fmt.Errorf("archive: copy: read the source: %w", exportErr)
	case loadErr != nil:
		return m, res, fmt.Errorf("archive: copy: %w", loadErr)
	}
	return m, res, nil
}

var errCopyAborted = errors.New("copy aborted")
