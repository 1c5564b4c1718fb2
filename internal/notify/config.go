package notify

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

// Defaults of Config.
const (
	DefaultQueueSize    = 1000
	DefaultTimeout      = 10 * time.Second
	DefaultMaxAttempts  = 8
	DefaultBackoff      = time.Second
	DefaultMaxBackoff   = time.Minute
	DefaultDrainTimeout = 5 * time.Second
	// MinSecretLen is the shortest secret accepted.
	MinSecretLen = 16
)

// Webhook is one receiver.
type Webhook struct {
	// URL is where changes are POSTed: http or https only.
	URL string
	// States, when not empty, are the only states sent (a change to
	// another state is not queued for this webhook).
	States []job.State
	// Secret signs every request (at least MinSecretLen bytes).
	Secret []byte
}

// Config configures a Notifier.
type Config struct {
	Webhooks []Webhook
	// OutputBucket names the outputs' bucket in payloads ("" leaves it out).
	OutputBucket string
	// QueueSize bounds each webhook's queue; a change that finds it full
	// is dropped, counted and logged.
	QueueSize int
	// Timeout bounds one request.
	Timeout time.Duration
	// MaxAttempts bounds the requests made for one change (first included).
	MaxAttempts int
	// Backoff is the first wait before a retry, doubled each retry up to
	// MaxBackoff; each wait is drawn at random below that bound (full
	// jitter), or is the receiver's Retry-After when it sends one (capped
	// at MaxBackoff).
	Backoff, MaxBackoff time.Duration
	// DrainTimeout bounds how long Stop waits for queued changes.
	DrainTimeout time.Duration
	// Logf receives one line per notable event (a change given up, an
	// overflow); nil is silent.
	Logf func(format string, args ...any)
}

// WithDefaults fills in unset fields.
func (c Config) WithDefaults() Config {
	def := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	def(&c.Timeout, DefaultTimeout)
	def(&c.Backoff, DefaultBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.DrainTimeout, DefaultDrainTimeout)
	return c
}

// Validate names the first invalid setting, as notify.webhooks[i].<field>.
func (c Config) Validate() error {
	for i, w := range c.Webhooks {
		if err := w.validate(); err != nil {
			return fmt.Errorf("notify.webhooks[%d].%w", i, err)
		}
	}
	switch {
	case c.QueueSize < 1:
		return fmt.Errorf("notify queue size must be at least 1, got %d", c.QueueSize)
	case c.MaxAttempts < 1:
		return fmt.Errorf("notify max attempts must be at least 1, got %d", c.MaxAttempts)
	case c.Timeout < 0 || c.Backoff < 0 || c.MaxBackoff < c.Backoff || c.DrainTimeout < 0:
		return fmt.Errorf("notify timeout, backoff and drain timeout must be positive and max backoff at least backoff")
	}
	return nil
}

func (w Webhook) validate() error {
	u, err := url.Parse(w.URL)
	if err != nil {
		return fmt.Errorf("url %q is not a URL: %v", w.URL, err)
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return fmt.Errorf("url %q: only http:// and https:// URLs are allowed", Redact(w.URL))
	}
	if u.Host == "" {
		return fmt.Errorf("url %q has no host", Redact(w.URL))
	}
	for _, s := range w.States {
		if !s.Valid() {
			return fmt.Errorf("states: unknown state %q (use %s)", s, stateList())
		}
	}
	if len(w.Secret) < MinSecretLen {
		return fmt.Errorf("secret must be at least %d characters (set secret, secret_file or secret_env; `openssl rand -hex 32` makes one)", MinSecretLen)
	}
	return nil
}

func stateList() string {
	var s []string
	for _, st := range job.States {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

// Redact is u without its user info and query, for logs: either may
// hold a token.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(invalid URL)"
	}
	p.User, p.RawQuery, p.Fragment = nil, "", ""
	return p.String()
}
