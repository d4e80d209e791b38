-- Application users. {password} is filled in by components/cratedb.py and travels on stdin only.
-- A user that exists already (HTTP 409, code 4099) gets its password set instead: see ALTER below.
CREATE USER {user} WITH (password = '{password}')
ALTER USER {user} SET (password = '{password}')
