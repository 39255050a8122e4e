package verisoul

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// AccountPath is the path of the delete call below the base URL, before
// the account id (escaped as one path segment) is appended.
const AccountPath = "/account/"

// CodeAccountNotFound is enrollq's code for the delete call's documented
// 400 answer, whose body carries no error code, only the message "Account
// not found": there is nothing to delete, so a delete that meets it is
// done.
const CodeAccountNotFound = "account_not_found"

// DeleteResult is the answer to a successful account deletion.
type DeleteResult struct {
	// RequestID is Verisoul's id of the request, for support cases.
	RequestID string
	// AccountID is the account the API says it deleted.
	AccountID string
}

type deleteResponse struct {
	RequestID string  `json:"request_id"`
	AccountID string  `json:"account_id"`
	Success   *bool   `json:"success"`
	Error     *string `json:"error"`
	Message   *string `json:"message"`
}

// DeleteAccount deletes accountID and its Face Match data at Verisoul
// (DELETE /account/{account_id}). It returns an *APIError for every
// failure, like Enroll; the documented 400 "Account not found" has Code
// CodeAccountNotFound.
func (c *Client) DeleteAccount(ctx context.Context, accountID string) (DeleteResult, error) {
	if accountID == "" || !utf8.ValidString(accountID) {
		return DeleteResult{}, &APIError{NotSent: true, Err: errors.New("account_id must be non-empty valid UTF-8")}
	}
	status, h, raw, err := c.do(ctx, http.MethodDelete, c.base+AccountPath+url.PathEscape(accountID), nil)
	if err != nil {
		return DeleteResult{}, err
	}
	res, err := parseDeleteResponse(status, h, raw, time.Now(), c.apiKey)
	if e, ok := err.(*APIError); ok {
		return res, c.redact(e)
	}
	return res, err
}

// ParseDeleteResponse turns one HTTP answer of the delete call into a
// result or an *APIError (for fuzz tests and the fake), as
// ParseEnrollResponse does for enroll.
func ParseDeleteResponse(status int, h http.Header, raw []byte, now time.Time) (DeleteResult, error) {
	return parseDeleteResponse(status, h, raw, now, "")
}

func parseDeleteResponse(status int, h http.Header, raw []byte, now time.Time, secret string) (DeleteResult, error) {
	var r deleteResponse
	jsonErr := json.Unmarshal(raw, &r)
	if status == http.StatusOK {
		if jsonErr == nil && r.Success != nil && *r.Success {
			return DeleteResult{RequestID: cleanRequestID(r.RequestID), AccountID: r.AccountID}, nil
		}
		cause := errors.New("200 without success:true")
		if jsonErr != nil {
			cause = fmt.Errorf("unreadable 200 body: %w", jsonErr)
		}
		return DeleteResult{}, &APIError{Status: status, RequestID: cleanRequestID(r.RequestID), Body: excerpt(raw, secret), Err: cause}
	}
	e := &APIError{Status: status, RetryAfter: parseRetryAfter(h.Get("Retry-After"), now)}
	if jsonErr == nil {
		e.RequestID = cleanRequestID(r.RequestID)
		if r.Error != nil && validCode(*r.Error) {
			e.Code = *r.Error
		}
		if e.Code == "" && status == http.StatusBadRequest && r.Message != nil &&
			strings.EqualFold(strings.TrimSpace(*r.Message), "account not found") {
			e.Code = CodeAccountNotFound
		}
	}
	if e.Code == "" {
		e.Body = excerpt(raw, secret)
	}
	return DeleteResult{}, e
}
