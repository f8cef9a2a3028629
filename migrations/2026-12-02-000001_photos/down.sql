DROP TABLE property_photos;
DROP TABLE photos;
