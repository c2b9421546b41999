package chaos_test

import (
	"testing"
	"time"
)

// TestFaultsTellTheTruth runs every scenario briefly (make test); make chaos runs them longer.
func TestFaultsTellTheTruth(t *testing.T) {
	runScenarios(t, 2*time.Second)
}
