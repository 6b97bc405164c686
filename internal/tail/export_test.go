package tail

import dto "github.com/prometheus/client_model/go"

func testutilCount(t *Tailer) float64 {
	var m dto.Metric
	t.truncs.Write(&m)
	return m.GetCounter().GetValue()
}
