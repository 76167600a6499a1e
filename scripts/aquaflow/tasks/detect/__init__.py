"""Detection-type tasks (detect, segment, obb): boxes, masks, oriented boxes per image; COCO; mAP."""
