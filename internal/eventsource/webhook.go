package eventsource

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/conveyorhq/conveyor/internal/s3event"
)

// Webhook defaults.
const (
	DefaultWebhookAddr = "127.0.0.1:9002"
	DefaultWebhookPath = "/s3/events"
	// DefaultMaxBody bounds one POST: a store sends one event, or a few
	// records, per request, a few KiB each.
	DefaultMaxBody = 1 << 20
	// MinSecretLen is the shortest shared secret accepted.
	MinSecretLen = 16
)

// WebhookConfig configures the webhook endpoint.
type WebhookConfig struct {
	Addr    string // HOST:PORT; default DefaultWebhookAddr (loopback)
	Path    string // default DefaultWebhookPath
	Secret  string // the shared secret: "Authorization: Bearer <Secret>"
	MaxBody int64  // bytes; default DefaultMaxBody
}

// WithDefaults fills the zero fields.
func (c WebhookConfig) WithDefaults() WebhookConfig {
	if c.Addr == "" {
		c.Addr = DefaultWebhookAddr
	}
	if c.Path == "" {
		c.Path = DefaultWebhookPath
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	return c
}

// Validate names the first invalid field.
func (c WebhookConfig) Validate() error {
	if len(c.Secret) < MinSecretLen {
		return fmt.Errorf("the webhook secret must be at least %d characters (it has %d): generate one with `openssl rand -hex 32`", MinSecretLen, len(c.Secret))
	}
	if strings.ContainsAny(c.Secret, " \t\r\n") {
		return errors.New("the webhook secret must not contain spaces or line breaks (stores send it in an HTTP header)")
	}
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("the webhook path %q must start with /", c.Path)
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("the webhook address %q is not HOST:PORT", c.Addr)
	}
	if c.MaxBody < 1024 {
		return fmt.Errorf("the webhook body limit must be at least 1024 bytes, got %d", c.MaxBody)
	}
	return nil
}

// NewWebhookHandler returns the endpoint's handler: it answers a POST with
// the right secret and an S3 notification body by calling handle with the
// body, then 200; a missing or wrong secret with 401 (handle is not
// called); a body that is not an S3 notification with 400 saying why; one
// over the limit with 413. An s3:TestEvent, or an event of another kind
// (a delete), is answered 200 and not handed on. HEAD answers 200 (stores
// probe their target with it).
func NewWebhookHandler(cfg WebhookConfig, handle func([]byte), logf func(string, ...any)) http.Handler {
	cfg = cfg.WithDefaults()
	if logf == nil {
		logf = func(string, ...any) {}
	}
	want := sha256.Sum256([]byte("Bearer " + cfg.Secret))
	var once sync.Once
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		switch r.Method {
		case http.MethodPost:
		case http.MethodHead:
			return
		default:
			w.Header().Set("Allow", "POST, HEAD")
			http.Error(w, "POST S3 event notifications here", http.StatusMethodNotAllowed)
			return
		}
		// Hashes of equal length, compared in constant time: neither the
		// secret's content nor its length shows in the timing.
		got := sha256.Sum256([]byte(strings.TrimSpace(r.Header.Get("Authorization"))))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			once.Do(func() {
				logf("bucket notifications: refused a webhook POST from %s without the right secret (Authorization: Bearer <secret>); this is said once", r.RemoteAddr)
			})
			w.Header().Set("WWW-Authenticate", `Bearer realm="conveyor"`)
			http.Error(w, "missing or wrong secret: send the configured webhook secret as Authorization: Bearer <secret>", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, cfg.MaxBody))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			http.Error(w, fmt.Sprintf("body over %d bytes: send one notification per request", cfg.MaxBody), http.StatusRequestEntityTooLarge)
			return
		case err != nil:
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		objs, bad, err := s3event.Parse(body)
		switch {
		case errors.Is(err, s3event.ErrNotObjectCreated):
			fmt.Fprintln(w, "ignored: not an object-created event")
			return
		case err != nil:
			http.Error(w, err.Error()+": send S3 event notification JSON (a Records list)", http.StatusBadRequest)
			return
		case len(objs) == 0 && len(bad) > 0:
			http.Error(w, bad[0].Error()+": no usable record", http.StatusBadRequest)
			return
		case len(objs) == 0:
			fmt.Fprintln(w, "ignored: no object-created record")
			return
		}
		handle(body)
		fmt.Fprintf(w, "queued %d object(s)\n", len(objs))
	})
}

// Webhook is the running webhook endpoint.
type Webhook struct {
	srv  *http.Server
	ln   net.Listener
	path string
	done chan struct{}
}

// StartWebhook validates cfg, listens and serves NewWebhookHandler on
// cfg.Path until Stop.
func StartWebhook(cfg WebhookConfig, handle func([]byte), logf func(string, ...any)) (*Webhook, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("webhook for bucket notifications: listen on %s: %w; choose another address", cfg.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(cfg.Path, NewWebhookHandler(cfg, handle, logf))
	h := &Webhook{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
			WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10},
		ln: ln, path: cfg.Path, done: make(chan struct{}),
	}
	go func() {
		defer close(h.done)
		_ = h.srv.Serve(ln)
	}()
	return h, nil
}

// URL is where stores POST notifications.
func (h *Webhook) URL() string { return "http://" + h.ln.Addr().String() + h.path }

// Stop stops accepting requests and waits briefly for those in progress.
func (h *Webhook) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
	<-h.done
}
