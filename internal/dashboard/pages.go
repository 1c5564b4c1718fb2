package dashboard

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/conveyorhq/conveyor/internal/job"
)

//go:embed assets
var assets embed.FS

// staticFS is what /static/ serves: scripts, the style sheet, the icon.
func staticFS() fs.FS {
	sub, err := fs.Sub(assets, "assets/static")
	if err != nil {
		panic(err)
	}
	return sub
}

type pages struct{ index, job *template.Template }

var funcs = template.FuncMap{
	"bytes":    humanBytes,
	"ms":       humanMS,
	"time":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"ptime":    func(t *time.Time) string { return ptrTime(t) },
	"stateOf":  func(s job.State) string { return string(s) },
	"retrying": canRetry,
	"add":      func(a, b int) int { return a + b },
	"pageURL":  pageURL,
}

// pageURL is the address of page n of q's results.
func pageURL(q Query, n int) string {
	v := url.Values{}
	if q.State != "" {
		v.Set("state", string(q.State))
	}
	if q.Search != "" {
		v.Set("q", q.Search)
	}
	if n > 1 {
		v.Set("page", strconv.Itoa(n))
	}
	return "/?" + v.Encode()
}

func parsePages() (*pages, error) {
	parse := func(name string) (*template.Template, error) {
		return template.New("layout.html").Funcs(funcs).ParseFS(assets, "assets/templates/layout.html", "assets/templates/"+name)
	}
	idx, err := parse("index.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard templates: %w", err)
	}
	jp, err := parse("job.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard templates: %w", err)
	}
	return &pages{index: idx, job: jp}, nil
}

// render executes t into a buffer first, so a template error is a clean
// 500 and not half a page.
func render(w http.ResponseWriter, t *template.Template, data any) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		http.Error(w, "render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

// canRetry reports whether the retry button applies to a job in state s:
// a dead job (attempts used up, or a permanent failure). A retrying job
// retries by itself.
func canRetry(s job.State) bool { return s == job.Dead }

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func humanMS(ms int64) string {
	if ms <= 0 {
		return "–"
	}
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return strconv.FormatInt(ms, 10) + " ms"
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}

func ptrTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
