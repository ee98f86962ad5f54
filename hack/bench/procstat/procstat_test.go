package procstat

import (
	"math"
	"os"
	"testing"
)

func TestReadsThisProcess(t *testing.T) {
	if _, err := CPUSeconds(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	rss, hwm, err := MemKiB(os.Getpid())
	if err != nil || rss <= 0 || hwm < rss {
		t.Fatalf("rss %d hwm %d err %v", rss, hwm, err)
	}
	if busy, _, ok := Busy(); !ok || busy <= 0 {
		t.Fatalf("busy %v ok %v", busy, ok)
	}
	if LoadAvg() == "" {
		t.Fatal("no load average")
	}
	if _, err := CPUSeconds(-1); err == nil {
		t.Fatal("a process that cannot exist was read")
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for p, want := range map[float64]float64{50: 5, 90: 9, 99: 10, 100: 10, 0: 1} {
		if got := Percentile(v, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("no values should give NaN")
	}
}
