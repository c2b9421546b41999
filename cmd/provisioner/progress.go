package main

import (
	"fmt"
	"io"
	"time"
)

// progress prints a long command's progress on stderr: done/total, percentage, the command's own
// counters, rate and ETA. On a terminal it rewrites one line with \r; otherwise it prints a line
// at every 5% step. Calls must not overlap.
type progress struct {
	w          io.Writer
	tty        bool
	verb, noun string
	now        func() time.Time
	start      time.Time
	lastStep   int
	printed    bool
}

func newProgress(w io.Writer, tty bool, verb, noun string) *progress {
	return &progress{w: w, tty: tty, verb: verb, noun: noun, now: time.Now, lastStep: -1}
}

// update reports done of total; extra (e.g. "2 failed") follows the percentage.
func (p *progress) update(done, total int, extra string) {
	if total == 0 {
		return
	}
	now := p.now()
	if p.start.IsZero() {
		p.start = now
	}
	pct := done * 100 / total
	line := fmt.Sprintf("%s: %d/%d %s (%d%%)", p.verb, done, total, p.noun, pct)
	if extra != "" {
		line += ", " + extra
	}
	if el := now.Sub(p.start); el > 0 && done > 0 {
		rate := float64(done) / el.Seconds()
		line += fmt.Sprintf(", %.1f/s", rate)
		if done < total {
			line += ", ETA " + time.Duration(float64(total-done)/rate*float64(time.Second)).Round(time.Second).String()
		} else {
			line += ", took " + el.Round(time.Millisecond).String()
		}
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
		p.printed = true
		return
	}
	if step := pct / 5; step > p.lastStep || done == total {
		p.lastStep = step
		fmt.Fprintln(p.w, line)
	}
}

func (p *progress) finish() {
	if p.tty && p.printed {
		fmt.Fprintln(p.w)
	}
}
