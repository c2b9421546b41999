package pgtest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcessCPU is the CPU time (user + system, seconds) pid used so far; withChildren adds that of
// the children it waited for. It reads /proc (Linux); 0 when pid is gone.
func ProcessCPU(pid int, withChildren bool) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	st := string(b)
	f := strings.Fields(st[strings.LastIndexByte(st, ')')+2:])
	fields := []int{11, 12} // utime, stime
	if withChildren {
		fields = append(fields, 13, 14) // cutime, cstime
	}
	var t float64
	for _, i := range fields {
		v, _ := strconv.ParseFloat(f[i], 64)
		t += v
	}
	return t / 100 // USER_HZ
}

// Postmaster returns the pid of the postmaster of the server a connection is on (the parent of
// its backend). The server must run on this machine.
func Postmaster(backendPID int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", backendPID))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// ServerCPU is the CPU time (seconds) a PostgreSQL server on this machine used so far: its
// postmaster with every backend and worker that exited, plus the live ones. Differences of two
// readings give the server's CPU over an interval, whatever processes came and went in it.
func ServerCPU(postmaster int) float64 {
	t := ProcessCPU(postmaster, true)
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", postmaster, postmaster))
	for _, c := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(c)
		t += ProcessCPU(pid, false)
	}
	return t
}
