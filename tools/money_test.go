package tools

import (
	"math"
	"testing"
)

func TestMoney(t *testing.T) {
	for _, tt := range []struct {
		amount int64
		want   string
	}{
		{0, "0.00 EUR"},
		{5, "0.05 EUR"},
		{-5, "-0.05 EUR"},
		{1200000, "12,000.00 EUR"},
		{-123456789, "-1,234,567.89 EUR"},
		{math.MaxInt64, "92,233,720,368,547,758.07 EUR"},
		{math.MinInt64, "-92,233,720,368,547,758.08 EUR"},
	} {
		if got := money(tt.amount, "EUR"); got != tt.want {
			t.Errorf("money(%d) = %q, want %q", tt.amount, got, tt.want)
		}
	}
}
