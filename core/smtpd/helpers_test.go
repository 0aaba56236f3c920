package smtpd

import (
	"os"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/core/store"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func storeDelivery(userID uint64) store.Delivery {
	return store.Delivery{UserID: userID, Body: strings.NewReader("Subject: fill\r\n\r\n0123456789\r\n")}
}
