"""What a sample may hold, for every reader of image-text files: a leaf module (no torch), so curation's worker
processes can use it without importing the training stack."""

MAX_CAPTION_CHARS = 10_000  # longer captions are truncated: no text tower reads that far
MAX_IMAGE_BYTES = 512 * 2**20  # a larger file is refused unread
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
