package metrics_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/conveyorhq/conveyor/internal/metrics"
)

const (
	alertsFile    = "../../deploy/prometheus/alerts.yml"
	alertTests    = "../../deploy/prometheus/alerts_test.yml"
	dashboardFile = "../../deploy/grafana/conveyor.json"
)

// metricName finds metric names in PromQL; label names, functions and
// label values do not start with these prefixes.
// String literals (label values) are removed first.
var (
	metricName    = regexp.MustCompile(`\b(?:conveyor|go|process)_[a-z0-9_]+\b|\bup\b`)
	stringLiteral = regexp.MustCompile(`"[^"]*"`)
)

// registered is every series name a fresh registry exposes: families,
// and a histogram's _bucket, _sum and _count.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	m.Webhooks(func() []metrics.WebhookStats { return []metrics.WebhookStats{{Index: 0}} })
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{"up": true} // Prometheus's own, per target
	for _, f := range fams {
		names[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	out := map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	return out
}

func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			out["panel "+p.Title+" #"+string(rune('A'+i))] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		out["variable "+v.Name] = v.Definition
	}
	return out
}

// Every metric the alert rules and the Grafana dashboard use exists, so
// a renamed metric cannot leave them silently empty.
func TestDeployUsesOnlyRegisteredMetrics(t *testing.T) {
	t.Parallel()
	have := registered(t)
	used := map[string]bool{}
	for _, set := range []map[string]string{alertExprs(t), dashboardExprs(t)} {
		for where, expr := range set {
			if strings.TrimSpace(expr) == "" {
				t.Errorf("%s has no expression", where)
			}
			for _, name := range metricName.FindAllString(stringLiteral.ReplaceAllString(expr, `""`), -1) {
				used[name] = true
				if !have[name] {
					t.Errorf("%s uses %s, which Conveyor does not expose", where, name)
				}
			}
		}
	}
	// The extraction itself works: these must be among the names found.
	for _, name := range []string{"conveyor_job_transitions_total", "conveyor_oldest_unfinished_job_age_seconds", "conveyor_reconcile_pass_failures_total", "conveyor_job_attempt_duration_seconds_bucket", "conveyor_webhook_dropped_total"} {
		if !used[name] {
			t.Errorf("%s is used by neither the alerts nor the dashboard (or the test no longer finds names)", name)
		}
	}
}

// promtool validates the alert rules and runs their unit tests. CI
// installs it (Debian's prometheus package); elsewhere the test skips
// when it is missing, unless CI=true or CONVEYOR_REQUIRE_SANDBOX=1.
func TestAlertRulesWithPromtool(t *testing.T) {
	t.Parallel()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("CONVEYOR_REQUIRE_SANDBOX") == "1" {
			t.Fatalf("promtool is not installed, but CI requires the alert rules to be checked: apt-get install prometheus")
		}
		t.Skip("promtool is not installed (apt-get install prometheus)")
	}
	dir, _ := filepath.Abs(filepath.Dir(alertsFile))
	for _, args := range [][]string{{"check", "rules", filepath.Base(alertsFile)}, {"test", "rules", filepath.Base(alertTests)}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
