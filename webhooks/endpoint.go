package webhooks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/enrollq/enrollq/outcomes"
)

// Endpoint is one receiver of webhooks, with its own secrets, event types
// and cursor.
type Endpoint struct {
	// Name identifies the endpoint in Redis keys, metrics and commands; it
	// must stay the same for the endpoint to keep its cursor.
	Name string
	// URL is where events are POSTed (http or https).
	URL string
	// Secrets sign each request; two during a rotation (the new one
	// first). They never print.
	Secrets []string
	// Events are the types sent; empty means every outcome type.
	Events []string

	signer *Signer
}

// Wants reports whether the endpoint takes events of type t.
func (e Endpoint) Wants(t string) bool { return len(e.Events) == 0 || slices.Contains(e.Events, t) }

// ShownURL is the URL without query or user info (which may hold tokens),
// for logs and status.
func (e Endpoint) ShownURL() string {
	u, err := url.Parse(e.URL)
	if err != nil {
		return "(invalid URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// DefaultName is the name of the endpoint given by ENROLLQ_WEBHOOK_URL.
const DefaultName = "default"

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Settings are the webhook settings as config.Config has them.
type Settings struct {
	URL    string // ENROLLQ_WEBHOOK_URL
	Secret string // ENROLLQ_WEBHOOK_SECRET (or _FILE): one or more, space- or comma-separated
	Events string // ENROLLQ_WEBHOOK_EVENTS: comma-separated types, empty for all
	File   string // ENROLLQ_WEBHOOKS_FILE
}

// fileFormat is ENROLLQ_WEBHOOKS_FILE's JSON.
type fileFormat struct {
	Endpoints []struct {
		Name        string   `json:"name"`
		URL         string   `json:"url"`
		Secrets     []string `json:"secrets"`
		SecretFiles []string `json:"secret_files"`
		Events      []string `json:"events"`
	} `json:"endpoints"`
}

// SettingError names the setting (its variable) a bad webhook setting came
// from.
type SettingError struct {
	Var  string // e.g. "ENROLLQ_WEBHOOK_URL"
	Rule string
}

func (e *SettingError) Error() string { return e.Var + ": " + e.Rule }

// Endpoints builds the endpoints of s: the one of URL (named "default"),
// then those of File. None is no error (webhooks are off). Errors are
// *SettingError naming the variable; secrets are never shown.
func Endpoints(s Settings) ([]Endpoint, error) {
	var out []Endpoint
	if s.URL != "" {
		ep := Endpoint{Name: DefaultName, URL: s.URL, Secrets: splitList(s.Secret, " ,")}
		events, err := parseEvents(splitList(s.Events, ","))
		if err != nil {
			return nil, &SettingError{"ENROLLQ_WEBHOOK_EVENTS", err.Error()}
		}
		ep.Events = events
		if err := ep.check(); err != nil {
			v := "ENROLLQ_WEBHOOK_URL"
			if strings.HasPrefix(err.Error(), "secret") {
				v = "ENROLLQ_WEBHOOK_SECRET"
			}
			return nil, &SettingError{v, err.Error()}
		}
		out = append(out, ep)
	} else if s.Secret != "" || s.Events != "" {
		return nil, &SettingError{"ENROLLQ_WEBHOOK_URL", "must be set with ENROLLQ_WEBHOOK_SECRET and ENROLLQ_WEBHOOK_EVENTS"}
	}
	if s.File != "" {
		bad := func(format string, args ...any) error {
			return &SettingError{"ENROLLQ_WEBHOOKS_FILE", fmt.Sprintf("%s: ", s.File) + fmt.Sprintf(format, args...)}
		}
		b, err := os.ReadFile(s.File)
		if err != nil {
			return nil, bad("cannot read: %v", err)
		}
		var f fileFormat
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, bad(`not {"endpoints": [{"name", "url", "secrets" or "secret_files", "events"}]}: %v`, err)
		}
		for i, fe := range f.Endpoints {
			ep := Endpoint{Name: fe.Name, URL: fe.URL, Secrets: fe.Secrets}
			for _, p := range fe.SecretFiles {
				sb, err := os.ReadFile(p)
				if err != nil {
					return nil, bad("endpoint %d (%q): secret file: %v", i+1, fe.Name, err)
				}
				ep.Secrets = append(ep.Secrets, strings.TrimRight(string(sb), "\r\n"))
			}
			if ep.Events, err = parseEvents(fe.Events); err != nil {
				return nil, bad("endpoint %d (%q): %v", i+1, fe.Name, err)
			}
			if err := ep.check(); err != nil {
				return nil, bad("endpoint %d (%q): %v", i+1, fe.Name, err)
			}
			out = append(out, ep)
		}
	}
	seen := map[string]bool{}
	for _, ep := range out {
		if seen[ep.Name] {
			return nil, &SettingError{"ENROLLQ_WEBHOOKS_FILE", fmt.Sprintf("endpoint name %q used twice (ENROLLQ_WEBHOOK_URL's is %q)", ep.Name, DefaultName)}
		}
		seen[ep.Name] = true
	}
	return out, nil
}

// NewEndpoint checks ep and makes it ready to sign, for callers that build
// endpoints in code rather than from Settings.
func NewEndpoint(ep Endpoint) (Endpoint, error) {
	err := ep.check()
	return ep, err
}

func (ep *Endpoint) check() error {
	if !nameRe.MatchString(ep.Name) {
		return fmt.Errorf("name %q: must be 1-64 of a-z, 0-9, _ and -, starting with a letter or digit", ep.Name)
	}
	u, err := url.Parse(ep.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url must be an absolute http(s) URL, got %q", ep.ShownURL())
	}
	if len(ep.Secrets) == 0 {
		return fmt.Errorf("secret: required (whsec_…)")
	}
	if len(ep.Secrets) > 2 {
		return fmt.Errorf("secret: at most two at once (the new and the old during a rotation), got %d", len(ep.Secrets))
	}
	s, err := NewSigner(ep.Secrets)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "webhooks: "))
	}
	ep.signer = s
	return nil
}

// CheckTypes reports the first name in types that is no outcome type.
func CheckTypes(types []string) error {
	_, err := parseEvents(types)
	return err
}

func parseEvents(list []string) ([]string, error) {
	for _, t := range list {
		if !slices.Contains(outcomes.Types, t) {
			return nil, fmt.Errorf("unknown event type %q; known: %s", t, strings.Join(outcomes.Types, ", "))
		}
	}
	return list, nil
}

func splitList(s, seps string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(seps, r) }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
