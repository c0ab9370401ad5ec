package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// record is one measurement: one line of the results file.
type record struct {
	Run    string         `json:"run"`
	Time   time.Time      `json:"time"`
	Round  int            `json:"round,omitempty"`
	Target string         `json:"target"`
	Metric string         `json:"metric"`
	Size   int            `json:"size_bytes,omitempty"`
	Conc   int            `json:"concurrency,omitempty"`
	Value  float64        `json:"value"`
	Unit   string         `json:"unit"`
	N      int64          `json:"n,omitempty"`
	Note   string         `json:"note,omitempty"`
	Extra  map[string]any `json:"extra,omitempty"`
}

type report struct {
	mu   sync.Mutex
	path string
	run  string
	f    *os.File
	enc  *json.Encoder
	recs []record
}

func newReport(path, run string) (*report, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &report{path: path, run: run, f: f, enc: json.NewEncoder(f)}, nil
}

func (r *report) record(rec record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec.Run, rec.Time = r.run, time.Now().UTC()
	r.recs = append(r.recs, rec)
	r.enc.Encode(rec)
}

func (r *report) note(what, v string) {
	r.record(record{Target: "machine", Metric: what, Note: v})
}

func (r *report) close() { r.f.Close() }

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *report) values(target, metric string, size, conc int) []float64 {
	var v []float64
	for _, x := range r.recs {
		if x.Target == target && x.Metric == metric && x.Size == size && x.Conc == conc {
			v = append(v, x.Value)
		}
	}
	return v
}

// ratio is the median over rounds of target/base, each computed within a round.
func (r *report) ratio(target, base, metric string, size int) float64 {
	byRound := map[int]float64{}
	for _, x := range r.recs {
		if x.Target == base && x.Metric == metric && x.Size == size {
			byRound[x.Round] = x.Value
		}
	}
	var v []float64
	for _, x := range r.recs {
		if x.Target == target && x.Metric == metric && x.Size == size {
			if b, ok := byRound[x.Round]; ok && b > 0 {
				v = append(v, x.Value/b)
			}
		}
	}
	return median(v)
}

func us(ns float64) string {
	switch {
	case math.IsNaN(ns):
		return "–"
	case ns >= 100e3:
		return fmt.Sprintf("%.0f µs", ns/1e3)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	default:
		return fmt.Sprintf("%.2f µs", ns/1e3)
	}
}

func kb(b float64) string {
	if math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.1f KB", b/1e3)
}

func ratioStr(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x)
}

type gate struct {
	name  string
	value string
	pass  bool
}

// summary prints the table (markdown, to paste into the README) and the gates.
// It returns an error if a gate fails, after printing everything.
func (r *report) summary(targets []string) error {
	w := io.MultiWriter(os.Stdout)
	proxies := without(targets, "direct")
	has := func(t string) bool {
		for _, x := range targets {
			if x == t {
				return true
			}
		}
		return false
	}
	rounds := 0
	for _, x := range r.recs {
		rounds = max(rounds, x.Round)
	}
	fmt.Fprintf(w, "\n## tether benchmark, run %s (%d rounds; medians; ratios are medians of within-round ratios)\n\n", r.run, rounds)
	var loads []string
	for _, x := range r.recs {
		if x.Target == "machine" {
			loads = append(loads, x.Metric+" "+x.Note)
		}
	}
	fmt.Fprintf(w, "Machine load average: %s. The proxy runs alone on CPU 1; backend and load on CPU 0.\n\n", strings.Join(loads, "; "))

	// M1.
	fmt.Fprintf(w, "### M1: proxy CPU per operation and latency\n\n")
	head := "| metric | size |"
	sep := "|---|---|"
	for _, t := range targets {
		head += " " + t + " |"
		sep += "---|"
	}
	for _, t := range proxies {
		if t != "nginx" {
			head += " " + t + "/nginx |"
			sep += "---|"
		}
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	type row struct{ metric, label string }
	rows := []row{
		{"cpu_per_unary", "proxy CPU per unary RPC"},
		{"cpu_per_stream_msg", "proxy CPU per stream message"},
		{"p50_at_1000rps", "p50 latency at 1000 rps"},
		{"p99_at_1000rps", "p99 latency at 1000 rps (not gated)"},
		{"backend_cpu_per_unary", "backend CPU per unary RPC"},
	}
	for _, rw := range rows {
		for _, size := range sizes {
			line := fmt.Sprintf("| %s | %s |", rw.label, sizeName(size))
			for _, t := range targets {
				line += " " + us(median(r.values(t, rw.metric, size, 0))) + " |"
			}
			for _, t := range proxies {
				if t != "nginx" {
					line += " " + ratioStr(r.ratio(t, "nginx", rw.metric, size)) + " |"
				}
			}
			fmt.Fprintln(w, line)
		}
	}
	for _, size := range sizes {
		line := fmt.Sprintf("| unary throughput (h2load, 32 in flight) | %s |", sizeName(size))
		for _, t := range targets {
			line += fmt.Sprintf(" %.0f/s |", median(r.values(t, "unary_rps", size, 0)))
		}
		for _, t := range proxies {
			if t != "nginx" {
				line += " " + ratioStr(r.ratio(t, "nginx", "unary_rps", size)) + " |"
			}
		}
		fmt.Fprintln(w, line)
	}

	// M2 and M4.
	fmt.Fprintf(w, "\n### M2: activation overhead (instance ready → first request there, on the instance's clock)\n\n")
	fmt.Fprintln(w, "| first requests held on one cold instance | samples | p50 | max | all answered after ready (p50) |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, c := range []int{1, 10, 100} {
		v := r.values("tether-cold", "activation_overhead", 0, c)
		if len(v) == 0 {
			continue
		}
		mx := math.Inf(-1)
		for _, x := range v {
			mx = math.Max(mx, x)
		}
		all := "–"
		if c > 1 {
			all = us(median(r.values("tether-cold", "cold_all_answered_after_ready", 0, c)))
		}
		fmt.Fprintf(w, "| %d | %d | %s | %s | %s |\n", c, len(v), us(median(v)), us(mx), all)
	}
	fmt.Fprintf(w, "\n### M4: cold start to first response (p50 over %d cold starts)\n\n", len(r.values("tether-cold", "cold_total", 0, 0)))
	fmt.Fprintln(w, "| backend start (request sent → instance listening) | activation (listening → request there) | RPC (request there → response at client) | total |")
	fmt.Fprintln(w, "|---|---|---|---|")
	fmt.Fprintf(w, "| %s | %s | %s | %s |\n",
		ms(median(r.values("tether-cold", "cold_backend_start", 0, 0))), ms(median(r.values("tether-cold", "cold_activation", 0, 0))),
		ms(median(r.values("tether-cold", "cold_rpc", 0, 0))), ms(median(r.values("tether-cold", "cold_total", 0, 0))))

	// M3.
	m3 := []string{"tether", "nginx", "haproxy"}
	haveM3 := len(r.values("tether", "mem_per_conn_idle", 0, 0)) > 0
	if haveM3 {
		fmt.Fprintf(w, "\n### M3: memory per pinned connection (slope of Pss over 1k–8k connections) and the largest N\n\n")
		fmt.Fprintln(w, "| proxy | per idle connection | per connection with one open stream | largest N (idle) | why it stopped |")
		fmt.Fprintln(w, "|---|---|---|---|---|")
		for _, t := range m3 {
			note := ""
			for _, x := range r.recs {
				if x.Target == t && x.Metric == "max_conns_idle" {
					note = x.Note
				}
			}
			if len(note) > 160 {
				note = note[:160] + "…"
			}
			note = strings.ReplaceAll(note, "|", "/")
			fmt.Fprintf(w, "| %s | %s | %s | %.0f | %s |\n", t, kb(median(r.values(t, "mem_per_conn_idle", 0, 0))),
				kb(median(r.values(t, "mem_per_conn_stream", 0, 0))), median(r.values(t, "max_conns_idle", 0, 0)), note)
		}
	}

	// Gates.
	var gates []gate
	if has("nginx") && has("tether") {
		worst := func(metric string) (float64, string) {
			w, at := math.NaN(), "no data"
			for _, size := range sizes {
				x := r.ratio("tether", "nginx", metric, size)
				if math.IsNaN(x) {
					return x, sizeName(size) + ": not measured"
				}
				if math.IsNaN(w) || x > w {
					w, at = x, sizeName(size)
				}
			}
			return w, at
		}
		x, at := worst("cpu_per_unary")
		gates = append(gates, gate{"CPU per unary RPC ≤ 1.0× nginx (every size)", fmt.Sprintf("worst %s at %s", ratioStr(x), at), x <= 1.0})
		x, at = worst("cpu_per_stream_msg")
		gates = append(gates, gate{"CPU per stream message ≤ 1.5× nginx (every size)", fmt.Sprintf("worst %s at %s", ratioStr(x), at), x <= 1.5})
		x, at = worst("p50_at_1000rps")
		gates = append(gates, gate{"p50 at 1000 rps ≤ 1.1× nginx (every size)", fmt.Sprintf("worst %s at %s", ratioStr(x), at), x <= 1.1})
		if haveM3 {
			t, n := median(r.values("tether", "mem_per_conn_idle", 0, 0)), median(r.values("nginx", "mem_per_conn_idle", 0, 0))
			gates = append(gates, gate{"memory per pinned idle connection ≤ 1.5× nginx", fmt.Sprintf("%s vs %s = %s", kb(t), kb(n), ratioStr(t/n)), t/n <= 1.5})
		}
	}
	if v := r.values("tether-cold", "activation_overhead", 0, 1); len(v) > 0 {
		p := median(v)
		gates = append(gates, gate{"activation overhead p50 ≤ 2 ms", fmt.Sprintf("%s over %d cold starts", ms(p), len(v)), p <= 2e6})
	}
	if haveM3 {
		n := median(r.values("tether", "max_conns_idle", 0, 0))
		gates = append(gates, gate{"10,000 concurrent pinned connections on one gateway", fmt.Sprintf("%.0f held", n), n >= 10000})
	}
	errsBy := map[string]int{}
	var firstErr = map[string]string{}
	for _, x := range r.recs {
		if x.Metric == "errors" {
			t := x.Target
			if t == "tether-cold" {
				t = "tether"
			}
			errsBy[t]++
			if firstErr[t] == "" {
				firstErr[t] = x.Note
			}
		}
	}
	total := 0
	var parts []string
	for _, t := range append(append([]string{}, targets...), "machine") {
		if n := errsBy[t]; n > 0 || t == "tether" {
			parts = append(parts, fmt.Sprintf("%s %d", t, n))
			total += n
		}
	}
	gates = append(gates, gate{"zero errors through tether (warm, pinned and cold)", fmt.Sprintf("%d", errsBy["tether"]), errsBy["tether"] == 0})
	gates = append(gates, gate{"zero errors everywhere", strings.Join(parts, ", "), total == 0})
	if total > 0 {
		fmt.Fprintf(w, "\n### Errors\n\n")
		for _, t := range targets {
			if errsBy[t] > 0 {
				fmt.Fprintf(w, "- %s: %d, first: %.300s\n", t, errsBy[t], firstErr[t])
			}
		}
	}
	fmt.Fprintf(w, "\n### Gates\n\n| gate | measured | result |\n|---|---|---|\n")
	failed := 0
	for _, g := range gates {
		res := "PASS"
		if !g.pass {
			res = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", g.name, g.value, res)
	}
	fmt.Fprintf(w, "\nResults: %s\n", r.path)
	if failed > 0 {
		return fmt.Errorf("%d of %d gates failed", failed, len(gates))
	}
	return nil
}

func ms(ns float64) string {
	if math.IsNaN(ns) {
		return "–"
	}
	return fmt.Sprintf("%.2f ms", ns/1e6)
}

func readFileTail(path string, n int) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b), nil
}
