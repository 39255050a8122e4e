package webhooks_test

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type dtoMetric struct{}

// labels reports whether m has a label whose text form contains want.
func (dtoMetric) labels(m prometheus.Metric, want string) bool {
	var pb dto.Metric
	if m.Write(&pb) != nil {
		return false
	}
	for _, l := range pb.Label {
		if strings.Contains(l.String(), want) {
			return true
		}
	}
	return false
}
