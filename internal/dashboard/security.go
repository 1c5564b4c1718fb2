package dashboard

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Cookie names.
const (
	tokenCookie = "conveyor_token"
	csrfCookie  = "conveyor_csrf"
	csrfHeader  = "X-CSRF-Token"
	csrfField   = "csrf"
)

// contentSecurityPolicy allows only the dashboard's own files: no inline
// script or style, no framing, forms posting only here.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// secure wraps h with the checks every request goes through: security
// headers, the Host check (a loopback dashboard answers only to loopback
// names, against DNS rebinding), the token when one is set, and the CSRF
// token on every state-changing request.
func (s *Server) secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer, browsers send
		// "Origin: null" on form posts, which the CSRF check refuses.
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")

		if s.cfg.Token == "" && !loopbackHost(r.Host) {
			http.Error(w, "this dashboard answers only to 127.0.0.1, [::1] or localhost", http.StatusMisdirectedRequest)
			return
		}
		if s.cfg.Token != "" && !s.authorized(w, r) {
			return
		}
		csrf := s.csrfToken(w, r)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if !s.checkCSRF(r, csrf) {
				http.Error(w, "missing or wrong CSRF token: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// authorized checks the access token: from the Authorization header, the
// cookie, or a ?token= link (which sets the cookie and redirects to the
// same page without it, so the token does not stay in the address bar).
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && s.tokenOK(v) {
		return true
	}
	if c, err := r.Cookie(tokenCookie); err == nil && s.tokenOK(c.Value) {
		return true
	}
	if v := r.URL.Query().Get("token"); v != "" && s.tokenOK(v) && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: v, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		u := *r.URL
		q := u.Query()
		q.Del("token")
		u.RawQuery = q.Encode()
		http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
		return false
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="conveyor"`)
	http.Error(w, "this dashboard requires its token: open the URL that `conveyor up` printed (it ends in ?token=...)", http.StatusUnauthorized)
	return false
}

func (s *Server) tokenOK(v string) bool {
	return subtle.ConstantTimeCompare([]byte(v), []byte(s.cfg.Token)) == 1
}

// csrfToken returns the browser's CSRF token (double-submit cookie),
// setting a new one when it has none.
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 32 {
		return c.Value
	}
	v := randomHex(16)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	// Requests later in this one see the new token.
	r.AddCookie(&http.Cookie{Name: csrfCookie, Value: v})
	return v
}

// checkCSRF accepts a state-changing request when it carries the
// browser's CSRF token (header or form field) and, when it says where it
// comes from, comes from this origin.
func (s *Server) checkCSRF(r *http.Request, want string) bool {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		// Only url-encoded forms: parsing a multipart body here would read
		// an upload into memory.
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
			got = r.PostFormValue(csrfField)
		}
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// loopbackHost reports whether a Host header names this machine's
// loopback interface.
func loopbackHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
