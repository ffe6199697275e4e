package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/replygate/replygate/internal/mtalab"
)

// targets are issue 3's: replygate in the path keeps at least this share
// of Postfix's no-milter accept rate, by concurrency, over unix and TCP.
var targets = map[int]float64{1: 0.75, 10: 0.70, 50: 0.80}

// cpuTarget is the most replygate may spend per message, in CPU-ms.
const cpuTarget = 0.5

type report struct {
	Command             string
	Machine             string
	Start, End          time.Time
	LoadAvg, LoadAvgEnd string
	Configs             []config
	Loads               []load
	Rounds              int
	Results             []result
}

func (r *report) failed() int {
	n := 0
	for _, res := range r.Results {
		if res.Err != nil {
			n++
		}
	}
	return n
}

// cell is the successful runs of one configuration at one concurrency.
type cell struct {
	runs                    int
	accept, deliver, cpu    []float64
	machineCPU              []float64
	warnings, msgs, withHdr int
}

func (r *report) cells() map[string]map[int]*cell {
	cells := map[string]map[int]*cell{}
	for _, c := range r.Configs {
		cells[c.Name] = map[int]*cell{}
		for _, l := range r.Loads {
			cells[c.Name][l.C] = &cell{}
		}
	}
	for _, res := range r.Results {
		if res.Err != nil {
			continue
		}
		c := cells[res.Config.Name][res.Load.C]
		c.runs++
		c.accept = append(c.accept, res.Accept)
		c.deliver = append(c.deliver, res.Deliver)
		c.cpu = append(c.cpu, res.CPUms)
		c.machineCPU = append(c.machineCPU, res.MachineCPUms)
		c.warnings += res.Warnings
		c.msgs += res.Delivered
		c.withHdr += res.WithHeader
	}
	return cells
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Postfix end to end: `contrib/bench`\n\n")
	w("    %s\n\n", r.Command)
	w("%s. Started %s, took %s; load average %s before, %s after.\n\n",
		r.Machine, r.Start.UTC().Format("2006-01-02 15:04 MST"), r.End.Sub(r.Start).Round(time.Second), r.LoadAvg, r.LoadAvgEnd)
	var ns []string
	for _, l := range r.Loads {
		ns = append(ns, fmt.Sprintf("N=%d at C=%d (warm-up %d)", l.N, l.C, l.Warm))
	}
	w("%d round(s), configurations alternated in an order rotated each round; %s; one message per SMTP session.\n", r.Rounds, strings.Join(ns, ", "))
	w("Accept = N ÷ seconds until smtp-source exited; delivered = N ÷ seconds until smtp-sink had all N. ")
	w("Ratio = median accept ÷ none's median at the same C. Milter CPU = user+system time of the milter process over the timed messages; machine CPU = time all CPUs were busy (Postfix, milter, smtp-source, smtp-sink, anything else) from the start of the timed messages until the last was delivered. ")
	w("Header = delivered messages (warm-up included) that carry the milter's header, over all runs.\n\n")

	cells := r.cells()
	w("| config | C | runs | accept msgs/s (median) | min–max | ratio to none | delivered msgs/s (median) | milter CPU ms/msg (median) | machine CPU ms/msg (median) | header | Postfix warnings |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Configs {
		for _, l := range r.Loads {
			x := cells[c.Name][l.C]
			if x.runs == 0 {
				w("| %s | %d | 0 | | | | | | | | |\n", c.Name, l.C)
				continue
			}
			ratio := ""
			if base := cells["none"][l.C]; base.runs > 0 {
				ratio = fmt.Sprintf("%.2f", median(x.accept)/median(base.accept))
			}
			cpu, hdr := "", "—"
			if c.Program != "" {
				cpu = fmt.Sprintf("%.3f", median(x.cpu))
				hdr = fmt.Sprintf("%d/%d", x.withHdr, x.msgs)
			}
			w("| %s | %d | %d | %.1f | %.0f–%.0f | %s | %.1f | %s | %.2f | %s | %d |\n",
				c.Name, l.C, x.runs, median(x.accept), slices.Min(x.accept), slices.Max(x.accept),
				ratio, median(x.deliver), cpu, median(x.machineCPU), hdr, x.warnings)
		}
	}

	w("\nTargets (issue 3): with replygate in the path Postfix keeps ≥ 0.75× / 0.70× / 0.80× of its no-milter accept rate at C=1 / 10 / 50, over unix and TCP; replygate spends < %.1f CPU-ms per message.\n\n", cpuTarget)
	for _, c := range r.Configs {
		if c.Program != "replygate" {
			continue
		}
		for _, l := range r.Loads {
			x, base := cells[c.Name][l.C], cells["none"][l.C]
			t, ok := targets[l.C]
			if x.runs == 0 || base.runs == 0 || !ok {
				continue
			}
			ratio, cpu := median(x.accept)/median(base.accept), median(x.cpu)
			w("- %s C=%d: %.2f× (target ≥ %.2f×) %s; %.3f CPU-ms/msg %s\n",
				c.Name, l.C, ratio, t, verdict(ratio >= t), cpu, verdict(cpu < cpuTarget))
		}
	}

	var texts []string
	for _, res := range r.Results {
		for _, t := range res.WarningTexts {
			if !slices.Contains(texts, t) {
				texts = append(texts, t)
			}
		}
	}
	if len(texts) > 0 {
		w("\nPostfix's warnings, digits replaced by N:\n\n")
		for _, t := range texts {
			w("- `%s`\n", t)
		}
	}

	if r.failed() > 0 {
		w("\nFailed runs (left out of the table):\n\n")
		for _, res := range r.Results {
			if res.Err != nil {
				w("- round %d, %s C=%d: %s\n", res.Round, res.Config.Name, res.Load.C, strings.ReplaceAll(res.Err.Error(), "\n", " "))
			}
		}
	}
	return b.String()
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// machine describes where the bench ran.
func machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	var pf []byte
	if p, err := mtalab.LookPath("postconf"); err == nil {
		pf, _ = exec.Command(p, "-h", "-d", "mail_version").Output()
	}
	return fmt.Sprintf("%d CPUs, Linux %s, Postfix %s, %s", runtime.NumCPU(),
		strings.TrimSpace(string(kernel)), strings.TrimSpace(string(pf)), runtime.Version())
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
