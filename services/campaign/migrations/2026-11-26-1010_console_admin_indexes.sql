-- Indexes of the console's administration screens.

-- "Subscrições canceladas": every unsubscribe, newest first, across campaigns (the results'
-- own unsubscribe index is per campaign).
CREATE INDEX IF NOT EXISTS results_unsubscribed_at
    ON results ((coalesce(unsubscribed_all_at, unsubscribed_campaign_at)) DESC, campaign_id DESC, recipient_id DESC)
    WHERE unsubscribed_campaign_at IS NOT NULL OR unsubscribed_all_at IS NOT NULL;

-- "Exibir uso das contas": messages sent in the last 24 hours, read as a range of this index
-- (index-only with the campaign id, which leads to the account).
CREATE INDEX IF NOT EXISTS results_sent_at ON results (sent_at, campaign_id) WHERE status = 'sent';
