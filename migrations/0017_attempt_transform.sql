-- Which transform code made each attempt's forwarded body: the first 16 hex digits of the SHA-256
-- of the transform's source (NULL: the event's own body was forwarded). A retry after a deploy
-- can then be told apart from the attempt before it.
ALTER TABLE delivery_attempts ADD COLUMN transform_code TEXT;
