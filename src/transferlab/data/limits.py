"""Limits and names every reader of image-text files shares; a leaf module (no torch), so curation's
worker processes can use them without importing the training stack."""

MAX_CAPTION_CHARS = 10_000  # longer captions are truncated: no text tower reads that far
MAX_IMAGE_BYTES = 512 * 2**20  # a larger file is refused unread
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
CLASSNAMES = "classnames.txt"  # beside a dataset's shards: class names, one per line, in label order
TEMPLATES = "zeroshot_classification_templates.txt"  # CLIP_benchmark's name: zero-shot templates with {c}
STREAM_ABOVE_BYTES = 2 * 2**30  # `stream: auto` streams a dataset whose images, decoded, would take more
