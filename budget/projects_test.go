package budget_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/enrollq/enrollq/budget"
)

// TestProjectsHandler: a lease request names its project and takes from
// that project's budget only: a 429 reported for acme pauses acme's
// leases, not the default project's; a project without a budget here is
// a 404 naming the projects there are.
func TestProjectsHandler(t *testing.T) {
	t.Parallel()
	rate := budget.Rate{Limit: 300, Period: time.Minute, Reserve: 30}
	def, acme := setup(t, rate, 0), setup(t, rate, 0)
	h := budget.ProjectsHandler(map[string]*budget.Budget{"default": def.b, "acme": acme.b}, budget.HandlerOptions{})
	do := func(path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.RemoteAddr = "127.0.0.1:5000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, body := range []string{"", `{}`, `{"project":"default"}`, `{"project":"acme"}`} {
		if rec := do(budget.LeasePath, body); rec.Code != 200 {
			t.Errorf("lease %q: %d %s", body, rec.Code, rec.Body)
		}
	}
	if rec := do(budget.ReportPath, `{"project":"acme","status":429,"retry_after":3}`); rec.Code != http.StatusNoContent {
		t.Fatalf("report acme's 429: %d %s", rec.Code, rec.Body)
	}
	if rec := do(budget.LeasePath, `{"project":"acme"}`); rec.Code != http.StatusTooManyRequests {
		t.Errorf("acme lease during acme's pause: %d, want 429", rec.Code)
	}
	if rec := do(budget.LeasePath, ""); rec.Code != 200 {
		t.Errorf("default lease during acme's pause: %d %s, want 200 (its own budget)", rec.Code, rec.Body)
	}
	rec := do(budget.LeasePath, `{"project":"other"}`)
	var d budget.DeniedResponse
	if rec.Code != http.StatusNotFound || json.Unmarshal(rec.Body.Bytes(), &d) != nil || !strings.Contains(d.Error, `"other"`) || !strings.Contains(d.Error, "acme, default") {
		t.Errorf("unknown project: %d %s", rec.Code, rec.Body)
	}
	if rec := do(budget.ReportPath, `{"project":"other","status":429}`); rec.Code != http.StatusNotFound {
		t.Errorf("report for an unknown project: %d", rec.Code)
	}
	if rec := do(budget.LeasePath, `{"project":`); rec.Code != http.StatusBadRequest {
		t.Errorf("broken lease body: %d", rec.Code)
	}
}
