package snapshot

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Policy is a retention policy, like a Data Lifecycle Manager rule. A
// snapshot is kept when any rule keeps it; the zero Policy keeps all.
type Policy struct {
	// KeepLast keeps the N newest snapshots.
	KeepLast int `json:"keep_last,omitempty" yaml:"keep_last"`
	// KeepWithin keeps the snapshots taken less than this long before the
	// newest one (not before now: Apply stays pure and a stopped machine
	// does not expire everything when it comes back).
	KeepWithin time.Duration `json:"keep_within,omitempty" yaml:"keep_within"`
	// KeepHourly keeps the newest snapshot of each of the N newest
	// hours that have one (UTC).
	KeepHourly int `json:"keep_hourly,omitempty" yaml:"keep_hourly"`
	// KeepDaily keeps the newest snapshot of each of the N newest days
	// that have one (days in UTC).
	KeepDaily int `json:"keep_daily,omitempty" yaml:"keep_daily"`
	// KeepWeekly keeps the newest snapshot of each of the N newest ISO
	// weeks that have one.
	KeepWeekly int `json:"keep_weekly,omitempty" yaml:"keep_weekly"`
	// KeepMonthly and KeepYearly keep the newest snapshot of each of the
	// N newest months (years) that have one (UTC).
	KeepMonthly int `json:"keep_monthly,omitempty" yaml:"keep_monthly"`
	KeepYearly  int `json:"keep_yearly,omitempty" yaml:"keep_yearly"`
	// KeepTags keeps every snapshot that has one of these tags: "k=v"
	// (the tag k with the value v) or "k" (the tag k, any value).
	KeepTags []string `json:"keep_tags,omitempty" yaml:"keep_tags"`
}

// Empty reports whether the policy has no rule (and so keeps everything).
func (p Policy) Empty() bool { return len(p.KeepTags) == 0 && p.counts() == [7]int64{} }

// counts is the policy's numeric rules, comparable.
func (p Policy) counts() [7]int64 {
	return [7]int64{int64(p.KeepLast), int64(p.KeepWithin), int64(p.KeepHourly), int64(p.KeepDaily),
		int64(p.KeepWeekly), int64(p.KeepMonthly), int64(p.KeepYearly)}
}

// HasTag reports whether s has the tag a rule names: "k=v" or "k".
func HasTag(s Snapshot, rule string) bool {
	k, v, withValue := strings.Cut(rule, "=")
	got, ok := s.Tags[k]
	return ok && (!withValue || got == v)
}

// ParseTag reads "k=v" (or "k" when allowBare) as a tag, saying what is
// wrong with it otherwise.
func ParseTag(s string, allowBare bool) (key, value string, err error) {
	k, v, ok := strings.Cut(s, "=")
	switch {
	case k == "":
		return "", "", fmt.Errorf("tag %q: the key is empty; write key=value", s)
	case !ok && !allowBare:
		return "", "", fmt.Errorf("tag %q: write key=value", s)
	case len(k) > 128 || len(v) > 256:
		return "", "", fmt.Errorf("tag %q: keys are at most 128 bytes, values 256", s)
	case strings.ContainsAny(k, "\n\r\t,"):
		return "", "", fmt.Errorf("tag %q: a key holds no comma, tab or line break", s)
	}
	return k, v, nil
}

// Validate checks the policy's values.
func (p Policy) Validate() error {
	switch {
	case p.KeepLast < 0:
		return fmt.Errorf("retention keep_last must be 0 or more, got %d", p.KeepLast)
	case p.KeepWithin < 0:
		return fmt.Errorf("retention keep_within must be 0 or more, got %s", p.KeepWithin)
	case p.KeepDaily < 0:
		return fmt.Errorf("retention keep_daily must be 0 or more, got %d", p.KeepDaily)
	case p.KeepWeekly < 0:
		return fmt.Errorf("retention keep_weekly must be 0 or more, got %d", p.KeepWeekly)
	case p.KeepHourly < 0:
		return fmt.Errorf("retention keep_hourly must be 0 or more, got %d", p.KeepHourly)
	case p.KeepMonthly < 0:
		return fmt.Errorf("retention keep_monthly must be 0 or more, got %d", p.KeepMonthly)
	case p.KeepYearly < 0:
		return fmt.Errorf("retention keep_yearly must be 0 or more, got %d", p.KeepYearly)
	}
	for _, t := range p.KeepTags {
		if _, _, err := ParseTag(t, true); err != nil {
			return fmt.Errorf("retention keep_tags: %w", err)
		}
	}
	return nil
}

// Apply decides which snapshots the policy keeps. keep and remove are
// newest first; reasons maps the ID of each kept snapshot to the rules
// that keep it. The empty policy keeps everything, with reason "no policy".
func Apply(snapshots []Snapshot, p Policy) (keep, remove []Snapshot, reasons map[string][]string) {
	list := append([]Snapshot(nil), snapshots...)
	sort.SliceStable(list, func(i, j int) bool { return list[i].Time.After(list[j].Time) })
	reasons = map[string][]string{}
	if p.Empty() {
		for _, s := range list {
			reasons[s.ID] = []string{"no policy"}
		}
		return list, nil, reasons
	}
	var newest time.Time
	if len(list) > 0 {
		newest = list[0].Time
	}
	// One bucket rule per period: the newest snapshot of each of the N
	// newest periods that have one.
	type bucket struct {
		n    int
		name string
		key  func(time.Time) string
		seen map[string]bool
	}
	buckets := []*bucket{
		{p.KeepHourly, "hourly", func(t time.Time) string { return t.Format("2006-01-02T15") }, map[string]bool{}},
		{p.KeepDaily, "daily", func(t time.Time) string { return t.Format("2006-01-02") }, map[string]bool{}},
		{p.KeepWeekly, "weekly", func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }, map[string]bool{}},
		{p.KeepMonthly, "monthly", func(t time.Time) string { return t.Format("2006-01") }, map[string]bool{}},
		{p.KeepYearly, "yearly", func(t time.Time) string { return t.Format("2006") }, map[string]bool{}},
	}
	for i, s := range list {
		var why []string
		if i < p.KeepLast {
			why = append(why, "last")
		}
		if p.KeepWithin > 0 && newest.Sub(s.Time) < p.KeepWithin {
			why = append(why, "within "+p.KeepWithin.String())
		}
		for _, rule := range p.KeepTags {
			if HasTag(s, rule) {
				why = append(why, "tag "+rule)
			}
		}
		t := s.Time.UTC()
		for _, b := range buckets {
			if k := b.key(t); b.n > 0 && !b.seen[k] && len(b.seen) < b.n {
				b.seen[k] = true
				why = append(why, b.name+" "+k)
			}
		}
		if len(why) > 0 {
			keep = append(keep, s)
			reasons[s.ID] = why
		} else {
			remove = append(remove, s)
		}
	}
	return keep, remove, reasons
}
