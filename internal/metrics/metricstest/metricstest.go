// Package metricstest reads a Prometheus scrape for tests: Scrape GETs
// /metrics over HTTP and parses it with the Prometheus text parser;
// Families answers questions about the result.
package metricstest

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is one parsed scrape, by metric family name.
type Families map[string]*dto.MetricFamily

// Scrape GETs url (with the bearer token when not empty) and parses the
// answer; anything but a 200 in the text format fails the test.
func Scrape(t testing.TB, url, token string) Families {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s: %s", url, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("scrape %s: Content-Type %q, want the text format", url, ct)
	}
	return Parse(t, resp.Body)
}

// Parse reads the text exposition format.
func Parse(t testing.TB, r io.Reader) Families {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return fams
}

// Names lists the families' names, sorted.
func (f Families) Names() []string {
	var out []string
	for n := range f {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// find returns the series of name whose labels include labels ("k=v").
func (f Families) find(name string, labels ...string) (*dto.Metric, error) {
	fam, ok := f[name]
	if !ok {
		return nil, fmt.Errorf("no metric family %s", name)
	}
	var found *dto.Metric
	for _, m := range fam.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		match := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			if have[k] != v {
				match = false
			}
		}
		if match {
			if found != nil {
				return nil, fmt.Errorf("%s%v matches more than one series", name, labels)
			}
			found = m
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no series %s%v", name, labels)
	}
	return found, nil
}

// Value is the value of a counter, gauge or untyped series.
func (f Families) Value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	m, err := f.find(name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	t.Fatalf("%s%v is not a counter or gauge", name, labels)
	return 0
}

// Count is the number of observations of a histogram series.
func (f Families) Count(t testing.TB, name string, labels ...string) uint64 {
	t.Helper()
	m, err := f.find(name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	if m.Histogram == nil {
		t.Fatalf("%s%v is not a histogram", name, labels)
	}
	return m.Histogram.GetSampleCount()
}

// Sum is the sum of the observations of a histogram series.
func (f Families) Sum(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	m, err := f.find(name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	if m.Histogram == nil {
		t.Fatalf("%s%v is not a histogram", name, labels)
	}
	return m.Histogram.GetSampleSum()
}

// LabelValues lists every label value of every series, for checks that
// none is something unbounded (a key, a job ID).
func (f Families) LabelValues() map[string][]string {
	out := map[string][]string{}
	for name, fam := range f {
		for _, m := range fam.Metric {
			for _, lp := range m.Label {
				out[name] = append(out[name], lp.GetName()+"="+lp.GetValue())
			}
		}
	}
	return out
}
