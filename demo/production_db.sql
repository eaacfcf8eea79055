-- Demo source database for moenv: `production_db`.
--
--   mariadb -uroot -h127.0.0.1 < demo/production_db.sql
--
-- Drops and recreates `production_db`, then fills it with 162,050 rows of
-- realistic-looking (entirely fake) data, all generated server-side in a few
-- seconds. Written for MariaDB 10.11+ and MySQL 8: rows come from cross joins of a
-- 10-row digits table (no MariaDB-only SEQUENCE engine, no recursive CTE, so no
-- recursion-depth settings are needed). Every value is computed from the row
-- number, so the data is identical on every run and on every server.
--
-- What the demo exercises:
--   users        personal data to mask (emails, phones, addresses, birth dates),
--                some NULLs, non-ASCII names, UNIQUE keys, ON UPDATE timestamps
--   categories   self-referencing foreign key (2-level tree); one name has a 4-byte emoji
--   products     UNIQUE sku, DECIMAL and FLOAT columns
--   orders       ENUM, composite secondary index, FK to users
--   order_items  composite PRIMARY KEY, two FKs
--   page_views   no primary key at all, nullable FK-like column
--   order_totals a view over orders JOIN users

SET NAMES utf8mb4;

DROP DATABASE IF EXISTS production_db;
CREATE DATABASE production_db CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE production_db;

-- ---------------------------------------------------------------------------
-- Schema
-- ---------------------------------------------------------------------------

CREATE TABLE users (
    id          INT UNSIGNED NOT NULL AUTO_INCREMENT,
    username    VARCHAR(64)  NOT NULL,
    email       VARCHAR(255) NOT NULL,
    phone       VARCHAR(32)  NULL,
    address     VARCHAR(255) NULL,
    birth_date  DATE         NULL,
    created_at  DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at  DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_users_username (username),
    UNIQUE KEY uq_users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE categories (
    id          INT UNSIGNED NOT NULL AUTO_INCREMENT,
    parent_id   INT UNSIGNED NULL,
    name        VARCHAR(100) NOT NULL,
    PRIMARY KEY (id),
    KEY idx_categories_parent (parent_id),
    CONSTRAINT fk_categories_parent FOREIGN KEY (parent_id) REFERENCES categories (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE products (
    id          INT UNSIGNED  NOT NULL AUTO_INCREMENT,
    category_id INT UNSIGNED  NOT NULL,
    sku         VARCHAR(32)   NOT NULL,
    name        VARCHAR(200)  NOT NULL,
    price       DECIMAL(10,2) NOT NULL,
    weight      FLOAT         NULL,
    created_at  DATETIME      NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_products_sku (sku),
    KEY idx_products_category (category_id),
    CONSTRAINT fk_products_category FOREIGN KEY (category_id) REFERENCES categories (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE orders (
    id          INT UNSIGNED  NOT NULL AUTO_INCREMENT,
    user_id     INT UNSIGNED  NOT NULL,
    status      ENUM('pending','completed','cancelled','refunded') NOT NULL DEFAULT 'pending',
    total       DECIMAL(12,2) NOT NULL DEFAULT 0.00,
    created_at  DATETIME      NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at  DATETIME      NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    KEY idx_orders_user_created (user_id, created_at),
    CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE order_items (
    order_id    INT UNSIGNED      NOT NULL,
    line_no     SMALLINT UNSIGNED NOT NULL,
    product_id  INT UNSIGNED      NOT NULL,
    quantity    INT UNSIGNED      NOT NULL DEFAULT 1,
    unit_price  DECIMAL(10,2)     NOT NULL,
    PRIMARY KEY (order_id, line_no),
    KEY idx_order_items_product (product_id),
    CONSTRAINT fk_order_items_order   FOREIGN KEY (order_id)   REFERENCES orders (id),
    CONSTRAINT fk_order_items_product FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Deliberately no primary key and no foreign key (analytics-style log table).
CREATE TABLE page_views (
    user_id     INT UNSIGNED NULL,
    url         VARCHAR(255) NOT NULL,
    viewed_at   DATETIME     NOT NULL,
    KEY idx_page_views_viewed_at (viewed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- ---------------------------------------------------------------------------
-- Row generator: _seq holds 0..99999 (five cross joins of a digits table).
-- Both helper tables are dropped at the end of the script.
-- ---------------------------------------------------------------------------

CREATE TABLE _digits (d TINYINT UNSIGNED NOT NULL PRIMARY KEY) ENGINE=InnoDB;
INSERT INTO _digits (d) VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9);

CREATE TABLE _seq (n INT UNSIGNED NOT NULL PRIMARY KEY) ENGINE=InnoDB;
INSERT INTO _seq (n)
SELECT d1.d + 10 * d2.d + 100 * d3.d + 1000 * d4.d + 10000 * d5.d
FROM _digits d1 CROSS JOIN _digits d2 CROSS JOIN _digits d3
     CROSS JOIN _digits d4 CROSS JOIN _digits d5;

-- ---------------------------------------------------------------------------
-- Data. Pseudo-random but deterministic: (n * large prime) MOD range.
-- 94608000 seconds = 1095 days = 2023-01-01 .. 2025-12-31.
-- ---------------------------------------------------------------------------

-- users: 20,000 ---------------------------------------------------------------
INSERT INTO users (id, username, email, phone, address, birth_date, created_at, updated_at)
SELECT
    s.n + 1,
    CONCAT(ELT(1 + s.n % 20,
               'anna', 'ben', 'chloé', 'david', 'emma', 'françois', 'greta', 'hiro',
               'ines', 'jürgen', 'karin', 'lucas', 'maría', 'noah', 'olga', 'piotr',
               'søren', 'zoë', '山田', '李娜'),
           '.', s.n + 1),
    CONCAT('user', s.n + 1, '@', ELT(1 + s.n % 3, 'mail.example.org', 'example.com', 'example.net')),
    CASE WHEN s.n % 7 = 3 THEN NULL
         ELSE CONCAT(ELT(1 + s.n % 5, '+1 555 ', '+44 20 ', '+49 30 ', '+33 1 ', '+81 3 '),
                     LPAD((s.n * 7919) % 10000000, 7, '0'))
    END,
    CASE WHEN s.n % 23 = 5 THEN NULL
         ELSE CONCAT(1 + (s.n * 37) % 998, ' ',
                     ELT(1 + s.n % 10, 'Maple Street', 'Oak Avenue', 'Hauptstraße', 'Rue de la Paix',
                         'Elm Lane', 'Königsallee', 'Station Road', 'Calle Mayor', 'High Street',
                         'Ginza-dōri'),
                     ', ', ELT(1 + (s.n * 13) % 12, 'Springfield', 'London', 'München', 'Paris',
                         'Zürich', 'São Paulo', 'Kraków', '東京', 'Málaga', 'Oslo', 'Toronto', 'Reykjavík'),
                     ' ', LPAD((s.n * 3571) % 100000, 5, '0'))
    END,
    CASE WHEN s.n % 19 = 7 THEN NULL
         ELSE DATE_ADD('1950-01-01', INTERVAL (s.n * 7877) % 20075 DAY)
    END,
    DATE_ADD('2023-01-01', INTERVAL (s.n * 104729) % 94608000 SECOND),
    LEAST(DATE_ADD(DATE_ADD('2023-01-01', INTERVAL (s.n * 104729) % 94608000 SECOND),
                   INTERVAL (s.n * 7321) % 8000000 SECOND),
          '2025-12-31 23:59:59')
FROM _seq s
WHERE s.n < 20000;

-- categories: 8 top-level + 42 children = 50 -----------------------------------
INSERT INTO categories (id, parent_id, name) VALUES
    (1, NULL, 'Electronics'),
    (2, NULL, 'Home & Küche'),
    (3, NULL, 'Books'),
    (4, NULL, 'Garden'),
    (5, NULL, 'Sports & Outdoors'),
    (6, NULL, 'Toys 🧸'),
    (7, NULL, 'Fashion'),
    (8, NULL, 'Café & Épicerie');

INSERT INTO categories (id, parent_id, name)
SELECT
    s.n + 9,
    1 + s.n % 8,
    CONCAT(p.name, ' › ',
           ELT(1 + s.n DIV 8, 'Essentials', 'Premium', 'Accessories', 'Outlet', 'New arrivals', 'Bestsellers'))
FROM _seq s
JOIN categories p ON p.id = 1 + s.n % 8
WHERE s.n < 42;

-- products: 2,000 (in the 42 leaf categories) -----------------------------------
INSERT INTO products (id, category_id, sku, name, price, weight, created_at)
SELECT
    s.n + 1,
    9 + (s.n * 17) % 42,
    CONCAT('SKU-', LPAD(s.n + 1, 6, '0')),
    CONCAT(ELT(1 + s.n % 10, 'Classic', 'Deluxe', 'Compact', 'Smart', 'Eco', 'Ultra', 'Mini',
               'Pro', 'Vintage', 'Ergonomic'),
           ' ',
           ELT(1 + (s.n DIV 10) % 12, 'Lamp', 'Kettle', 'Backpack', 'Novel', 'Headphones', 'Chair',
               'Jacket', 'Drone', 'Teapot', 'Rake', 'Football', 'Crème brûlée set'),
           ' ', s.n + 1),
    ROUND(1.99 + ((s.n * 7919) % 49900) / 100, 2),
    CASE WHEN s.n % 50 = 0 THEN NULL ELSE ((s.n * 131) % 20000) / 1000 + 0.05 END,
    DATE_ADD('2023-01-01', INTERVAL (s.n * 15485863) % 94608000 SECOND)
FROM _seq s
WHERE s.n < 2000;

-- orders: 40,000 ----------------------------------------------------------------
-- Every 5th user never ordered; the rest are skewed so low ids are regulars
-- (dozens of orders) and most users have a handful. Each order is placed between
-- its user's sign-up and the end of 2025.
INSERT INTO orders (id, user_id, status, total, created_at, updated_at)
SELECT
    o.n + 1,
    o.user_id,
    ELT(1 + (o.n * 7) % 20,
        'completed', 'completed', 'completed', 'completed', 'completed', 'completed', 'completed',
        'completed', 'completed', 'completed', 'completed', 'completed', 'completed', 'completed',
        'pending', 'pending', 'pending', 'cancelled', 'cancelled', 'refunded'),
    0.00,
    o.placed_at,
    LEAST(DATE_ADD(o.placed_at, INTERVAL (o.n * 53) % 1209600 SECOND), '2025-12-31 23:59:59')
FROM (
    SELECT s.n,
           u.id AS user_id,
           DATE_ADD(u.created_at, INTERVAL (s.n * 48611)
                    % GREATEST(1, TIMESTAMPDIFF(SECOND, u.created_at, '2025-12-31 23:00:00')) SECOND)
               AS placed_at
    FROM (SELECT n,
                 CASE WHEN n % 2 = 0 THEN (n * 7907) % 16000
                      ELSE ((n * 7907) % 16000) * ((n * 7907) % 16000) DIV 16000
                 END AS x
          FROM _seq WHERE n < 40000) s
    JOIN users u ON u.id = 1 + s.x + s.x DIV 4
) o;

-- order_items: 1..3 lines per order (~80,000) ----------------------------------
INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price)
SELECT
    o.id,
    l.d,
    p.id,
    1 + (o.id * 3 + l.d) % 4,
    p.price
FROM orders o
JOIN _digits l ON l.d BETWEEN 1 AND 1 + (o.id * 31) % 3
JOIN products p ON p.id = 1 + (o.id * 97 + l.d * 389) % 2000;

-- Order totals = sum of their lines. Assigning updated_at to itself keeps the
-- ON UPDATE clause from stamping every order with NOW().
UPDATE orders o
JOIN (SELECT order_id, SUM(quantity * unit_price) AS s
      FROM order_items GROUP BY order_id) t ON t.order_id = o.id
SET o.total = t.s, o.updated_at = o.updated_at;

-- page_views: 20,000; a quarter are anonymous (user_id NULL) --------------------
INSERT INTO page_views (user_id, url, viewed_at)
SELECT
    CASE WHEN s.n % 4 = 0 THEN NULL ELSE 1 + (s.n * 6151) % 20000 END,
    ELT(1 + s.n % 6,
        '/',
        CONCAT('/products/', 1 + (s.n * 389) % 2000),
        CONCAT('/products/', 1 + (s.n * 389) % 2000, '?ref=search'),
        CONCAT('/categories/', 1 + (s.n * 13) % 50),
        '/cart',
        CONCAT('/account/orders/', 1 + (s.n * 7) % 40000)),
    DATE_ADD('2023-01-01', INTERVAL (s.n * 2750159) % 94608000 SECOND)
FROM _seq s
WHERE s.n < 20000;

DROP TABLE _seq;
DROP TABLE _digits;

-- ---------------------------------------------------------------------------
-- View
-- ---------------------------------------------------------------------------

-- SQL SECURITY INVOKER: the view works wherever it is cloned, even where the
-- account that created it does not exist.
CREATE SQL SECURITY INVOKER VIEW order_totals AS
SELECT u.id AS user_id,
       u.username,
       COUNT(o.id) AS order_count,
       SUM(o.total) AS total_spent
FROM orders o
JOIN users u ON u.id = o.user_id
GROUP BY u.id, u.username;

-- ---------------------------------------------------------------------------
-- Summary
-- ---------------------------------------------------------------------------

SELECT 'users' AS table_name, COUNT(*) AS row_count FROM users
UNION ALL SELECT 'categories',   COUNT(*) FROM categories
UNION ALL SELECT 'products',     COUNT(*) FROM products
UNION ALL SELECT 'orders',       COUNT(*) FROM orders
UNION ALL SELECT 'order_items',  COUNT(*) FROM order_items
UNION ALL SELECT 'page_views',   COUNT(*) FROM page_views
UNION ALL SELECT 'order_totals (view)', COUNT(*) FROM order_totals;
