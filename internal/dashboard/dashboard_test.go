package dashboard

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/conveyorhq/conveyor/internal/job"
	"github.com/conveyorhq/conveyor/internal/jobstore"
	"github.com/conveyorhq/conveyor/internal/s3server/s3test"
)

// bundle is what a test needs besides the server.
type bundle struct {
	s3      *s3.Client
	store   *jobstore.Store
	input   string
	output  string
	logDir  string
	retried []string
}

func setup(t *testing.T, cfg Config) (*Server, *bundle) {
	t.Helper()
	srv := s3test.Start(t)
	b := &bundle{
		s3: srv.Client, input: srv.Bucket(t, "in"), output: srv.Bucket(t, "out"), logDir: t.TempDir(),
	}
	b.store = jobstore.New(srv.Client, srv.Bucket(t, "state"))
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg, Deps{
		S3: b.s3, Store: b.store, InputBucket: b.input, OutputBucket: b.output,
		LogPath: func(id string) (string, error) { return filepath.Join(b.logDir, id+".log"), nil },
		Retry: func(ctx context.Context, id string) (*job.Record, error) {
			b.retried = append(b.retried, id)
			return b.store.Update(ctx, id, func(r *job.Record) error { return r.Retry(time.Now(), 1) })
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

// addJob stores a record and shows it to the dashboard.
func addJob(t *testing.T, s *Server, b *bundle, key string, state job.State) *job.Record {
	t.Helper()
	r := job.New(b.input, key, "", fmt.Sprintf("%x", time.Now().UnixNano()), 42, 1, time.Now())
	r.State = state
	if err := b.store.Create(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	s.Observe(r)
	return r
}

// request runs one request through the whole handler, as a browser on
// loopback would send it.
func request(s *Server, method, target string, body io.Reader, hdr map[string]string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, body)
	req.Host = "127.0.0.1:9001"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	return w
}

func csrfCookieOf(t *testing.T, w *httptest.ResponseRecorder) *http.Cookie {
	t.Helper()
	for _, c := range w.Result().Cookies() {
		if c.Name == csrfCookie {
			return c
		}
	}
	t.Fatalf("no %s cookie set", csrfCookie)
	return nil
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Config{})
	for _, p := range []string{"/", "/static/index.js", "/api/jobs"} {
		w := request(s, "GET", p, nil, nil)
		if w.Code != 200 {
			t.Fatalf("GET %s: %d %s", p, w.Code, w.Body)
		}
		h := w.Header()
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("GET %s: CSP %q", p, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", p)
		}
	}
	// No inline script in the page: every <script> has a src.
	body := request(s, "GET", "/", nil, nil).Body.String()
	if strings.Count(body, "<script") != strings.Count(body, "<script src=") {
		t.Errorf("the page has an inline script:\n%s", body)
	}
}

func TestHostMustBeLoopbackWithoutToken(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Config{})
	req := httptest.NewRequest("GET", "/", nil)
	req.Host = "attacker.example:9001" // DNS rebinding
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code != http.StatusMisdirectedRequest {
		t.Errorf("Host attacker.example: %d, want 421", w.Code)
	}
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	s, b := setup(t, Config{})
	r := addJob(t, s, b, "dead.txt", job.Dead)
	page := request(s, "GET", "/jobs/"+r.ID, nil, nil)
	c := csrfCookieOf(t, page)
	if !strings.Contains(page.Body.String(), `name="csrf" value="`+c.Value+`"`) {
		t.Fatalf("the job page's retry form lacks the CSRF token")
	}
	form := func(v string) io.Reader { return strings.NewReader(url.Values{"csrf": {v}}.Encode()) }
	formHdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for _, tc := range []struct {
		name    string
		body    io.Reader
		hdr     map[string]string
		cookies []*http.Cookie
	}{
		{"no token, no cookie", nil, nil, nil},
		{"cookie but no token", nil, nil, []*http.Cookie{c}},
		{"token but no cookie", form(c.Value), formHdr, nil},
		{"wrong token", form(strings.Repeat("0", 32)), formHdr, []*http.Cookie{c}},
		{"cross-origin", form(c.Value), map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"}, []*http.Cookie{c}},
		{"cross-site fetch", nil, map[string]string{csrfHeader: c.Value, "Sec-Fetch-Site": "cross-site"}, []*http.Cookie{c}},
	} {
		w := request(s, "POST", "/jobs/"+r.ID+"/retry", tc.body, tc.hdr, tc.cookies...)
		if w.Code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tc.name, w.Code)
		}
	}
	if len(b.retried) != 0 {
		t.Fatalf("rejected requests retried %v", b.retried)
	}
	w := request(s, "POST", "/jobs/"+r.ID+"/retry", form(c.Value), map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://127.0.0.1:9001"}, c)
	if w.Code != http.StatusSeeOther || len(b.retried) != 1 {
		t.Fatalf("good token: %d %s, retried %v; want 303 and one retry", w.Code, w.Body, b.retried)
	}
	if e, _ := s.index.Get(r.ID); e.State != job.Queued {
		t.Errorf("after retry the list says %s, want queued", e.State)
	}
	// GET never changes anything.
	if w := request(s, "GET", "/jobs/"+r.ID+"/retry", nil, nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET retry: %d, want 405", w.Code)
	}
}

func TestTokenRequiredOffLoopback(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Config{Addr: "0.0.0.0:0"})
	tok := s.Token()
	if len(tok) < 16 {
		t.Fatalf("no token generated for a non-loopback address: %q", tok)
	}
	if !strings.Contains(s.URL(), "?token="+tok) {
		t.Errorf("URL %s lacks the token", s.URL())
	}
	if w := request(s, "GET", "/", nil, nil); w.Code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", w.Code)
	}
	if w := request(s, "GET", "/?token=wrong-token-wrong-token", nil, nil); w.Code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", w.Code)
	}
	w := request(s, "GET", "/?token="+tok+"&state=dead", nil, nil)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/?state=dead" {
		t.Fatalf("token link: %d to %q, want 303 to /?state=dead", w.Code, w.Header().Get("Location"))
	}
	var tc *http.Cookie
	for _, c := range w.Result().Cookies() {
		if c.Name == tokenCookie {
			tc = c
		}
	}
	if tc == nil || !tc.HttpOnly || tc.SameSite != http.SameSiteStrictMode {
		t.Fatalf("token cookie %+v, want HttpOnly SameSite=Strict", tc)
	}
	if w := request(s, "GET", "/", nil, nil, tc); w.Code != 200 {
		t.Errorf("with the cookie: %d, want 200", w.Code)
	}
	if w := request(s, "GET", "/api/jobs", nil, map[string]string{"Authorization": "Bearer " + tok}); w.Code != 200 {
		t.Errorf("with a bearer token: %d, want 200", w.Code)
	}
	// A token does not stand for CSRF protection.
	if w := request(s, "POST", "/api/upload?key=a", strings.NewReader("a"), map[string]string{"Authorization": "Bearer " + tok}); w.Code != http.StatusForbidden {
		t.Errorf("upload with token but no CSRF token: %d, want 403", w.Code)
	}
}

func TestHTMLInKeysIsEscaped(t *testing.T) {
	t.Parallel()
	s, b := setup(t, Config{})
	key := `<img src=x onerror=alert(1)>.txt`
	r := addJob(t, s, b, key, job.Dead)
	r.Error = `<script>alert(2)</script>`
	if _, err := b.store.Update(context.Background(), r.ID, func(x *job.Record) error { x.Error = r.Error; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/?q=" + url.QueryEscape("<img"), "/jobs/" + r.ID} {
		body := request(s, "GET", p, nil, nil).Body.String()
		if strings.Contains(body, "<img src=x") || strings.Contains(body, "<script>alert") {
			t.Errorf("GET %s: raw HTML from a key or error in the page", p)
		}
		if !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;.txt") {
			t.Errorf("GET %s: the escaped key is missing", p)
		}
	}
	if body := request(s, "GET", "/jobs/"+r.ID, nil, nil).Body.String(); !strings.Contains(body, "&lt;script&gt;alert(2)&lt;/script&gt;") {
		t.Errorf("job page: the escaped error is missing")
	}
	for _, p := range []string{"/api/jobs", "/api/jobs/" + r.ID} {
		if body := request(s, "GET", p, nil, nil).Body.String(); strings.Contains(body, "<img") {
			t.Errorf("GET %s: raw < in JSON", p)
		}
	}
}

// fakeIndex fills the index with n jobs created a second apart.
func fakeIndex(x *Index, n int) time.Time {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	states := job.States
	for i := range n {
		x.Put(&Entry{
			ID: fmt.Sprintf("%032x", i), Key: fmt.Sprintf("batch/%06d.csv", i), State: states[i%len(states)],
			Size: int64(i), Attempt: 1, MaxAttempts: 3, Created: t0.Add(time.Duration(i) * time.Second),
		})
	}
	x.setReady()
	return t0
}

func TestPagination100k(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, Config{})
	fakeIndex(s.index, 100_000)
	w := request(s, "GET", "/?page=2", nil, nil)
	body := w.Body.String()
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, body)
	}
	if n := strings.Count(body, "<tr data-id="); n != DefaultPageSize {
		t.Errorf("page 2 has %d rows, want %d", n, DefaultPageSize)
	}
	// Newest first: page 2 starts at the 51st newest.
	if !strings.Contains(body, "batch/099949.csv") || strings.Contains(body, "batch/099950.csv") || strings.Contains(body, "batch/099899.csv") {
		t.Errorf("page 2 is not jobs 99,949 down to 99,900")
	}
	if !strings.Contains(body, "page 2 of 2000") {
		t.Errorf("page 2 does not say 'page 2 of 2000'")
	}
	if len(body) > 200_000 {
		t.Errorf("a page of 50 jobs is %d bytes: the page must not carry the index", len(body))
	}
	want, dead := []string{}, 0
	for i := 99_999; i >= 0; i-- { // newest first
		if job.States[i%len(job.States)] != job.Dead {
			continue
		}
		dead++
		if k := fmt.Sprintf("batch/%06d.csv", i); strings.Contains(k, "0999") {
			want = append(want, k)
		}
	}
	p := s.index.Query(Query{State: job.Dead, Search: "0999", Page: 1, Size: 10})
	if p.Total != len(want) || len(p.Jobs) != 10 || p.Jobs[0].Key != want[0] || p.Jobs[1].Key != want[1] || p.Counts[job.Dead] != dead {
		t.Errorf("dead jobs matching 0999: total %d, %d on the page, first %q, %d dead; want %d, 10, %s, %d", p.Total, len(p.Jobs), p.Jobs[0].Key, p.Counts[job.Dead], len(want), want[0], dead)
	}
	if p := s.index.Query(Query{Page: 5000, Size: 50}); len(p.Jobs) != 0 || p.Pages != 2000 {
		t.Errorf("beyond the last page: %d jobs, %d pages", len(p.Jobs), p.Pages)
	}
}

func BenchmarkJobsPage100k(b *testing.B) {
	s, _ := setup(&testing.T{}, Config{})
	fakeIndex(s.index, 100_000)
	for _, tc := range []struct{ name, target string }{
		{"first page", "/"},
		{"page 1000", "/?page=1000"},
		{"state filter", "/?state=dead&page=3"},
		{"search", "/?q=0999"},
		{"api", "/api/jobs?page=10"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if w := request(s, "GET", tc.target, nil, nil); w.Code != 200 {
					b.Fatal(w.Code)
				}
			}
		})
	}
}

func TestIndexOrderAndUpdates(t *testing.T) {
	t.Parallel()
	x := NewIndex()
	t0 := time.Now()
	x.Put(&Entry{ID: "b", Key: "b", State: job.Queued, Created: t0})
	x.Put(&Entry{ID: "a", Key: "a", State: job.Queued, Created: t0.Add(time.Second)})
	x.Put(&Entry{ID: "c", Key: "c", State: job.Queued, Created: t0.Add(-time.Second)})
	if x.Put(&Entry{ID: "b", Key: "b", State: job.Queued, Created: t0}) {
		t.Error("an unchanged entry reported a change")
	}
	x.Put(&Entry{ID: "b", Key: "b", State: job.Succeeded, Created: t0, Finished: t0, ProcessMS: 500})
	p := x.Query(Query{Size: 10})
	var got []string
	for _, e := range p.Jobs {
		got = append(got, e.ID+":"+string(e.State))
	}
	if strings.Join(got, " ") != "a:queued b:succeeded c:queued" {
		t.Errorf("order %v", got)
	}
	x.Remove("a")
	if p := x.Query(Query{Size: 10}); p.All != 2 || p.Counts[job.Queued] != 1 {
		t.Errorf("after remove: %d jobs, %d queued", p.All, p.Counts[job.Queued])
	}
	tp := x.Throughput(t0)
	if tp.Finished[59] != 1 || tp.AvgProcessMS[59] != 500 {
		t.Errorf("throughput of the last minute: %d finished, %d ms", tp.Finished[59], tp.AvgProcessMS[59])
	}
}

func TestUploadLogAndDownload(t *testing.T) {
	t.Parallel()
	s, b := setup(t, Config{})
	c := csrfCookieOf(t, request(s, "GET", "/", nil, nil))
	data := bytes.Repeat([]byte("conveyor "), 1<<20) // 9 MiB: two parts
	w := request(s, "POST", "/api/upload?key="+url.QueryEscape("up/a b.txt"), bytes.NewReader(data), map[string]string{csrfHeader: c.Value}, c)
	if w.Code != 200 {
		t.Fatalf("upload: %d %s", w.Code, w.Body)
	}
	if !strings.Contains(w.Body.String(), `"job_id":"`) {
		t.Errorf("upload answer lacks the job ID: %s", w.Body)
	}
	obj, err := b.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(b.input), Key: aws.String("up/a b.txt")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("uploaded %d bytes, stored %d", len(data), len(got))
	}
	if w := request(s, "POST", "/api/upload?key=", strings.NewReader("x"), map[string]string{csrfHeader: c.Value}, c); w.Code != 400 {
		t.Errorf("empty key: %d, want 400", w.Code)
	}

	r := addJob(t, s, b, "in.txt", job.Succeeded)
	out := []byte("<html><script>alert(1)</script>")
	meta := map[string]string{job.MetaJob: r.ID, job.MetaInputVersion: r.InputVersion()}
	if _, err := b.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(b.output), Key: aws.String("in.txt/re\"port.html"), Body: bytes.NewReader(out), Metadata: meta}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Update(context.Background(), r.ID, func(x *job.Record) error {
		x.Outputs = []job.Output{{Key: "in.txt/re\"port.html", Size: int64(len(out))}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w = request(s, "GET", "/jobs/"+r.ID+"/outputs/0", nil, nil)
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), out) {
		t.Fatalf("download: %d %q", w.Code, w.Body)
	}
	if ct, cd := w.Header().Get("Content-Type"), w.Header().Get("Content-Disposition"); ct != "application/octet-stream" || !strings.HasPrefix(cd, "attachment") {
		t.Errorf("download served as %q, %q; want an octet-stream attachment", ct, cd)
	}
	// The same output, replaced by a newer version's job: refused, with
	// the job it belongs to now.
	other := job.ID(b.input, "in.txt", "v:newer")
	if _, err := b.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(b.output), Key: aws.String("in.txt/re\"port.html"), Body: strings.NewReader("v2"),
		Metadata: map[string]string{job.MetaJob: other, job.MetaInputVersion: "newer"}}); err != nil {
		t.Fatal(err)
	}
	if w := request(s, "GET", "/jobs/"+r.ID+"/outputs/0", nil, nil); w.Code != 409 || !strings.Contains(w.Body.String(), other) {
		t.Errorf("download of an output another job replaced: %d %q", w.Code, w.Body)
	}
	if w := request(s, "GET", "/jobs/"+r.ID+"/outputs/1", nil, nil); w.Code != 404 {
		t.Errorf("missing output: %d, want 404", w.Code)
	}

	if err := os.WriteFile(filepath.Join(b.logDir, r.ID+".log"), []byte("line 1\nline 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w = request(s, "GET", "/jobs/"+r.ID+"/log?offset=7", nil, nil)
	if w.Body.String() != "line 2\n" || w.Header().Get("X-Log-Next") != "14" || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Errorf("log from 7: %q next %s type %s", w.Body, w.Header().Get("X-Log-Next"), w.Header().Get("Content-Type"))
	}
	if w := request(s, "GET", "/jobs/../../etc/passwd/log", nil, nil); w.Code == 200 {
		t.Errorf("path outside the jobs: %d", w.Code)
	}
}

func TestScanFillsTheIndex(t *testing.T) {
	t.Parallel()
	s, b := setup(t, Config{})
	var ids []string
	for i := range 5 {
		r := job.New(b.input, fmt.Sprintf("k%d", i), "", fmt.Sprint(i), 1, 1, time.Now())
		if err := b.store.Create(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	<-s.Scanned()
	for _, id := range ids {
		if _, ok := s.index.Get(id); !ok {
			t.Errorf("job %s not indexed after the first scan", id)
		}
	}
}
