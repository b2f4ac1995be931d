"""What the agency may do in a client's Cloudflare account: the action catalogue, the one gate every
action passes, the Cloudflare API client (the official SDK) and the record of every action run."""
