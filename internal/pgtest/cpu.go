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

// ProcStatus reads a numeric field of /proc/pid/status ("PPid", "VmRSS", ...); kB fields in
// bytes. 0 when pid or the field is gone.
func ProcStatus(pid int, name string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseInt(f[0], 10, 64)
			if len(f) > 1 && f[1] == "kB" {
				n *= 1024
			}
			return n
		}
	}
	return 0
}

// Postmaster returns the pid of the postmaster of the server a connection is on (the parent of
// its backend). The server must run on this machine.
func Postmaster(backendPID int) int { return int(ProcStatus(backendPID, "PPid")) }

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
