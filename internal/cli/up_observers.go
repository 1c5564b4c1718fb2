package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/local"
	"github.com/conveyorhq/conveyor/internal/metrics"
	"github.com/conveyorhq/conveyor/internal/notify"
)

// webhookConfig is one entry of notify.webhooks. The secret comes from
// exactly one of secret, secret_file (its first line) or secret_env (the
// name of an environment variable holding it).
type webhookConfig struct {
	URL        string   `yaml:"url"`
	States     []string `yaml:"states"`
	Secret     string   `yaml:"secret"`
	SecretFile string   `yaml:"secret_file"`
	SecretEnv  string   `yaml:"secret_env"`
}

// notifier builds the webhooks' notifier of `conveyor up`; nil when none
// is configured. Its log lines go to logw.
func (c FileConfig) notifier(logw io.Writer) (*notify.Notifier, error) {
	if len(c.Notify.Webhooks) == 0 {
		return nil, nil
	}
	getenv := c.getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	var hooks []notify.Webhook
	for i, w := range c.Notify.Webhooks {
		secret, err := w.secret(getenv)
		if err != nil {
			return nil, usageErrorf("notify.webhooks[%d]: %v", i, err)
		}
		h := notify.Webhook{URL: strings.TrimSpace(w.URL), Secret: []byte(secret)}
		for _, s := range w.States {
			h.States = append(h.States, job.State(strings.TrimSpace(s)))
		}
		hooks = append(hooks, h)
	}
	n, err := notify.New(notify.Config{
		Webhooks:     hooks,
		OutputBucket: c.Buckets.Output,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(logw, time.Now().Format("15:04:05 ")+format+"\n", args...)
		},
	})
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return n, nil
}

func (w webhookConfig) secret(getenv func(string) string) (string, error) {
	set := 0
	for _, v := range []string{w.Secret, w.SecretFile, w.SecretEnv} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return "", fmt.Errorf("set exactly one of secret, secret_file or secret_env (each request is signed with it)")
	}
	switch {
	case w.SecretFile != "":
		b, err := os.ReadFile(w.SecretFile)
		if err != nil {
			return "", fmt.Errorf("secret_file: %v", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimSpace(line), nil
	case w.SecretEnv != "":
		v := getenv(w.SecretEnv)
		if v == "" {
			return "", fmt.Errorf("secret_env: the environment variable %s is empty or not set", w.SecretEnv)
		}
		return v, nil
	}
	return w.Secret, nil
}

// metricsServer serves m on metrics.addr; nil when the dashboard serves
// them instead.
func (c FileConfig) metricsServer(m *metrics.Metrics) (*metrics.Server, error) {
	addr := strings.TrimSpace(c.Metrics.Addr)
	if addr == "" {
		return nil, nil
	}
	s, err := metrics.Serve(addr, c.Metrics.Token, m.Handler())
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return s, nil
}

// metricsLine is the banner's metrics and webhooks lines, empty when
// neither is on.
func metricsLine(p *local.Pipeline, ms *metrics.Server, n *notify.Notifier) string {
	var s string
	switch {
	case ms != nil:
		s = fmt.Sprintf("  metrics      http://%s/metrics\n", ms.Addr())
	case p.Dashboard != nil:
		s = fmt.Sprintf("  metrics      http://%s/metrics  (Prometheus; the dashboard's token, if any, as a bearer token)\n", p.Dashboard.Addr())
	}
	if d := n.Describe(); d != "" {
		s += "  webhooks     " + d + "\n"
	}
	return s
}
