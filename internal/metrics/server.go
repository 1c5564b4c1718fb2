package metrics

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// MinTokenLen is the shortest bearer token Serve accepts.
const MinTokenLen = 16

// Server serves /metrics on an address of its own (metrics.addr).
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Serve listens on addr and serves h at /metrics. On a loopback address
// the token is optional and requests must name a loopback host (against
// DNS rebinding); on any other address a token of at least MinTokenLen
// characters is required, sent as "Authorization: Bearer <token>"
// (Prometheus: authorization.credentials in the scrape config).
func Serve(addr, token string, h http.Handler) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.addr %q must be HOST:PORT: %v", addr, err)
	}
	loopback := isLoopback(host)
	switch {
	case token == "" && !loopback:
		return nil, fmt.Errorf("metrics.addr %s is reachable from other machines: set metrics.token (at least %d characters; Prometheus sends it as a bearer token), or listen on 127.0.0.1", addr, MinTokenLen)
	case token != "" && len(token) < MinTokenLen:
		return nil, fmt.Errorf("metrics.token must be at least %d characters", MinTokenLen)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w (choose another metrics.addr)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", guard(token, h))
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop closes the server, waiting a little for scrapes in progress.
func (s *Server) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.srv.Close()
	}
}

func guard(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			host, _, err := net.SplitHostPort(r.Host)
			if err != nil {
				host = r.Host // no port
			}
			if !isLoopback(strings.Trim(host, "[]")) {
				http.Error(w, "these metrics answer only to 127.0.0.1, [::1] or localhost", http.StatusMisdirectedRequest)
				return
			}
		} else {
			v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(v), []byte(token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="conveyor metrics"`)
				http.Error(w, "these metrics require metrics.token as a bearer token (Prometheus: authorization: {credentials: ...})", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
