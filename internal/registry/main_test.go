package registry

import (
	"testing"

	"github.com/tenantmem/tenantmem/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
