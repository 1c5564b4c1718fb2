package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/conveyorhq/conveyor/bench/internal/benchproc"
)

// measure is one child process's cost.
type measure struct {
	Wall   time.Duration
	CPU    time.Duration // user + system
	MaxRSS int64         // bytes
}

func measureOf(name string, wall time.Duration, ps *os.ProcessState, peak int64) measure {
	m := measure{Wall: wall, CPU: ps.UserTime() + ps.SystemTime(), MaxRSS: peak}
	fmt.Printf("  %-20s wall %7.2fs  cpu %7.2fs  rss %5.0f MB\n", name, m.Wall.Seconds(), m.CPU.Seconds(), float64(m.MaxRSS)/1e6)
	return m
}

func printMachine(o options) {
	out, _ := exec.Command(o.restic, "version").Output()
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	fmt.Printf("machine: %d CPUs (%s), %s, %s", runtime.NumCPU(), cpu, runtime.Version(), out)
	fmt.Printf("scale %.2f, %d run(s), load average %s at start\n", o.scale, o.runs, benchproc.LoadAvg())
}

// report prints, for each Conveyor (this build, and -baseline's), the
// medians of every phase against restic's, the ratio and issue 14's
// target; with a baseline, this build's times over the baseline's too.
func report(names []string, results map[string][]map[string]measure, repo map[string]int64, prune bool) {
	med := func(tool, phase string, f func(measure) float64) float64 {
		var v []float64
		for _, r := range results[tool] {
			v = append(v, f(r[phase]))
		}
		return median(v)
	}
	wall := func(m measure) float64 { return m.Wall.Seconds() }
	cpu := func(m measure) float64 { return m.CPU.Seconds() }
	rss := func(m measure) float64 { return float64(m.MaxRSS) / 1e6 }
	ps := phases
	if !prune {
		ps = phases[:len(phases)-1]
	}
	rssOK := func(r, c float64) string {
		if c <= r {
			return " ok"
		}
		return " MISS"
	}
	for _, name := range names {
		if name == "restic" {
			continue
		}
		fmt.Printf("\n%s against restic (medians of %d run(s))\n", name, len(results[name]))
		fmt.Printf("%-12s %9s %9s %7s %7s | %8s %8s | %7s %7s\n", "phase", "restic s", name, "ratio", "target", "cpu r/c", "", "rss MB", "r/c")
		for _, p := range ps {
			rw, cw := med("restic", p, wall), med(name, p, wall)
			tg := "-"
			ok := ""
			if t, has := targets[p]; has {
				tg = fmt.Sprintf("<=%.2f", t)
				if cw/rw <= t {
					ok = " ok"
				} else {
					ok = " MISS"
				}
			}
			rr, cr := med("restic", p, rss), med(name, p, rss)
			fmt.Printf("%-12s %9.2f %9.2f %7.2f %7s%s | %8.2f %8.2f | %7.0f %7.0f%s\n", p, rw, cw, cw/rw, tg, ok,
				med("restic", p, cpu), med(name, p, cpu), rr, cr, rssOK(rr, cr))
		}
		ratio := float64(repo[name]) / float64(repo["restic"])
		ok := " ok"
		if ratio > targets["repo"] {
			ok = " MISS"
		}
		fmt.Printf("%-12s %8.0fM %8.0fM %7.2f %7s%s\n", "repository", float64(repo["restic"])/1e6, float64(repo[name])/1e6, ratio, fmt.Sprintf("<=%.2f", targets["repo"]), ok)
	}
	if _, ok := results["baseline"]; ok {
		fmt.Printf("\nconveyor against baseline (medians): wall, cpu and peak RSS ratios\n")
		for _, p := range ps {
			fmt.Printf("%-12s wall %5.2f / %5.2f s = %5.2f   cpu %5.2f   rss %4.0f / %4.0f MB\n", p,
				med("conveyor", p, wall), med("baseline", p, wall), med("conveyor", p, wall)/med("baseline", p, wall),
				med("conveyor", p, cpu)/med("baseline", p, cpu), med("conveyor", p, rss), med("baseline", p, rss))
		}
	}
	fmt.Printf("load average %s at the end\n", benchproc.LoadAvg())
}
