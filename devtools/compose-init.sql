-- docker-compose.yaml: the databases besides Airflow's own metadata database.
CREATE DATABASE ods;
CREATE DATABASE simulators;
CREATE DATABASE marquez;
