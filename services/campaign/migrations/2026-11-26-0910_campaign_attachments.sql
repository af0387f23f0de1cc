-- Files of the file manager a campaign sends: attached, or inline images the HTML shows through
-- `cid:<content_id>`. The file itself stays in the file store (sender reads it by key).
CREATE TABLE IF NOT EXISTS campaign_attachments (
    campaign_id  integer NOT NULL REFERENCES campaigns ON DELETE CASCADE,
    position     smallint NOT NULL,
    key          text NOT NULL,
    filename     text NOT NULL,
    content_type text NOT NULL DEFAULT 'application/octet-stream',
    inline       boolean NOT NULL DEFAULT false,
    content_id   text,
    PRIMARY KEY (campaign_id, position)
);
