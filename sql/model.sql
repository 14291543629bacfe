-- The unified customer model: schema crm (people, companies, deals merged
-- from every source), and its configuration in crm_sync (mappings, match
-- rules, field priorities). crm_sync.merge() (src/merge/) fills it.

CREATE SCHEMA crm;
COMMENT ON SCHEMA crm IS
    'One clean, de-duplicated customer model merged from every CRM source by crm_sync.merge() (run after each sync).';

-- What each provider's landing rows contribute to a unified field: a SQL
-- expression over the landing row r (typed columns, or r._raw, which always
-- holds the whole record). source NULL applies to every source of the
-- provider; a row with a source overrides it for that source.
CREATE TABLE crm_sync.mappings (
    provider    text NOT NULL,
    object      text NOT NULL,
    entity      text NOT NULL CHECK (entity IN ('contact', 'company', 'deal')),
    field       text NOT NULL,
    expression  text NOT NULL,
    source      text REFERENCES crm_sync.sources (name) ON DELETE CASCADE,
    enabled     boolean NOT NULL DEFAULT true,
    is_default  boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX mappings_key ON crm_sync.mappings (provider, object, field, coalesce(source, ''));
COMMENT ON TABLE crm_sync.mappings IS
    'Which unified field each CRM object''s landing rows feed, as a SQL expression over the landing row r (e.g. r.email, r._raw->>''Email'', lower(r.custom__c)). Edit freely; a row with source set overrides the provider''s row for that source. Fields: see crm_sync.unified_fields.';

CREATE TABLE crm_sync.unified_fields (
    entity  text NOT NULL,
    field   text NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('text', 'email', 'phone', 'domain', 'country', 'numeric', 'date', 'timestamptz', 'ref')),
    PRIMARY KEY (entity, field)
);
COMMENT ON TABLE crm_sync.unified_fields IS
    'The fields of crm.contacts/companies/deals and how their values are cleaned. ref fields hold the source''s own id of a linked record: company_ref (a contact''s or deal''s company) becomes company_id, contact_ref (a deal''s primary contact) becomes contact_id, the unified ids of the linked rows.';
INSERT INTO crm_sync.unified_fields VALUES
    ('contact', 'first_name', 'text'), ('contact', 'last_name', 'text'), ('contact', 'email', 'email'),
    ('contact', 'phone', 'phone'), ('contact', 'company_name', 'text'), ('contact', 'company_domain', 'domain'),
    ('contact', 'company_ref', 'ref'), ('contact', 'owner', 'text'), ('contact', 'lifecycle_stage', 'text'),
    ('contact', 'title', 'text'), ('contact', 'country', 'country'),
    ('contact', 'created_at', 'timestamptz'), ('contact', 'updated_at', 'timestamptz'),
    ('company', 'name', 'text'), ('company', 'domain', 'domain'), ('company', 'phone', 'phone'),
    ('company', 'country', 'country'), ('company', 'industry', 'text'), ('company', 'employees', 'numeric'),
    ('company', 'annual_revenue', 'numeric'), ('company', 'owner', 'text'), ('company', 'lifecycle_stage', 'text'),
    ('company', 'created_at', 'timestamptz'), ('company', 'updated_at', 'timestamptz'),
    ('deal', 'name', 'text'), ('deal', 'amount', 'numeric'), ('deal', 'currency', 'text'),
    ('deal', 'stage', 'text'), ('deal', 'close_date', 'date'), ('deal', 'company_ref', 'ref'), ('deal', 'contact_ref', 'ref'),
    ('deal', 'owner', 'text'), ('deal', 'created_at', 'timestamptz'), ('deal', 'updated_at', 'timestamptz');

INSERT INTO crm_sync.mappings (provider, object, entity, field, expression, is_default) VALUES
    -- HubSpot: values are in r._raw->'properties'; associated records in
    -- r._raw->'associations' (the connector's option associations). The
    -- primary company is the entry of the labelled type (the others repeat
    -- as *_unlabeled); deals have no primary contact, so the lowest id is
    -- taken, the same whichever API call supplied the list.
    ('hubspot', 'contacts', 'contact', 'first_name', $$r._raw->'properties'->>'firstname'$$, true),
    ('hubspot', 'contacts', 'contact', 'last_name', $$r._raw->'properties'->>'lastname'$$, true),
    ('hubspot', 'contacts', 'contact', 'email', $$r._raw->'properties'->>'email'$$, true),
    ('hubspot', 'contacts', 'contact', 'phone', $$coalesce(nullif(r._raw->'properties'->>'phone', ''), r._raw->'properties'->>'mobilephone')$$, true),
    ('hubspot', 'contacts', 'contact', 'company_name', $$r._raw->'properties'->>'company'$$, true),
    ('hubspot', 'contacts', 'contact', 'company_domain', $$r._raw->'properties'->>'website'$$, true),
    ('hubspot', 'contacts', 'contact', 'company_ref', $$coalesce(nullif(r._raw->'properties'->>'associatedcompanyid', ''), jsonb_path_query_first(r._raw, '$.associations.companies.results[*] ? (@.type == "contact_to_company").id') #>> '{}', r._raw->'associations'->'companies'->'results'->0->>'id')$$, true),
    ('hubspot', 'contacts', 'contact', 'owner', $$r._raw->'properties'->>'hubspot_owner_id'$$, true),
    ('hubspot', 'contacts', 'contact', 'lifecycle_stage', $$r._raw->'properties'->>'lifecyclestage'$$, true),
    ('hubspot', 'contacts', 'contact', 'title', $$r._raw->'properties'->>'jobtitle'$$, true),
    ('hubspot', 'contacts', 'contact', 'country', $$r._raw->'properties'->>'country'$$, true),
    ('hubspot', 'contacts', 'contact', 'created_at', $$r._raw->'properties'->>'createdate'$$, true),
    ('hubspot', 'contacts', 'contact', 'updated_at', $$r._updated_at$$, true),
    ('hubspot', 'companies', 'company', 'name', $$r._raw->'properties'->>'name'$$, true),
    ('hubspot', 'companies', 'company', 'domain', $$coalesce(nullif(r._raw->'properties'->>'domain', ''), r._raw->'properties'->>'website')$$, true),
    ('hubspot', 'companies', 'company', 'phone', $$r._raw->'properties'->>'phone'$$, true),
    ('hubspot', 'companies', 'company', 'country', $$r._raw->'properties'->>'country'$$, true),
    ('hubspot', 'companies', 'company', 'industry', $$r._raw->'properties'->>'industry'$$, true),
    ('hubspot', 'companies', 'company', 'employees', $$r._raw->'properties'->>'numberofemployees'$$, true),
    ('hubspot', 'companies', 'company', 'annual_revenue', $$r._raw->'properties'->>'annualrevenue'$$, true),
    ('hubspot', 'companies', 'company', 'owner', $$r._raw->'properties'->>'hubspot_owner_id'$$, true),
    ('hubspot', 'companies', 'company', 'lifecycle_stage', $$r._raw->'properties'->>'lifecyclestage'$$, true),
    ('hubspot', 'companies', 'company', 'created_at', $$r._raw->'properties'->>'createdate'$$, true),
    ('hubspot', 'companies', 'company', 'updated_at', $$r._updated_at$$, true),
    ('hubspot', 'deals', 'deal', 'name', $$r._raw->'properties'->>'dealname'$$, true),
    ('hubspot', 'deals', 'deal', 'amount', $$r._raw->'properties'->>'amount'$$, true),
    ('hubspot', 'deals', 'deal', 'currency', $$r._raw->'properties'->>'deal_currency_code'$$, true),
    ('hubspot', 'deals', 'deal', 'stage', $$r._raw->'properties'->>'dealstage'$$, true),
    ('hubspot', 'deals', 'deal', 'close_date', $$r._raw->'properties'->>'closedate'$$, true),
    ('hubspot', 'deals', 'deal', 'company_ref', $$coalesce(jsonb_path_query_first(r._raw, '$.associations.companies.results[*] ? (@.type == "deal_to_company").id') #>> '{}', r._raw->'associations'->'companies'->'results'->0->>'id')$$, true),
    ('hubspot', 'deals', 'deal', 'contact_ref', $$(SELECT e->>'id' FROM jsonb_array_elements(r._raw->'associations'->'contacts'->'results') e ORDER BY length(e->>'id'), e->>'id' LIMIT 1)$$, true),
    ('hubspot', 'deals', 'deal', 'owner', $$r._raw->'properties'->>'hubspot_owner_id'$$, true),
    ('hubspot', 'deals', 'deal', 'created_at', $$r._raw->'properties'->>'createdate'$$, true),
    ('hubspot', 'deals', 'deal', 'updated_at', $$r._updated_at$$, true),
    -- Salesforce: values are in r._raw by field API name; compound
    -- addresses are objects.
    ('salesforce', 'Contact', 'contact', 'first_name', $$r._raw->>'FirstName'$$, true),
    ('salesforce', 'Contact', 'contact', 'last_name', $$r._raw->>'LastName'$$, true),
    ('salesforce', 'Contact', 'contact', 'email', $$r._raw->>'Email'$$, true),
    ('salesforce', 'Contact', 'contact', 'phone', $$coalesce(nullif(r._raw->>'Phone', ''), r._raw->>'MobilePhone')$$, true),
    ('salesforce', 'Contact', 'contact', 'company_ref', $$r._raw->>'AccountId'$$, true),
    ('salesforce', 'Contact', 'contact', 'owner', $$r._raw->>'OwnerId'$$, true),
    ('salesforce', 'Contact', 'contact', 'title', $$r._raw->>'Title'$$, true),
    ('salesforce', 'Contact', 'contact', 'country', $$r._raw->>'MailingCountry'$$, true),
    ('salesforce', 'Contact', 'contact', 'created_at', $$r._raw->>'CreatedDate'$$, true),
    ('salesforce', 'Contact', 'contact', 'updated_at', $$r._updated_at$$, true),
    ('salesforce', 'Lead', 'contact', 'first_name', $$r._raw->>'FirstName'$$, true),
    ('salesforce', 'Lead', 'contact', 'last_name', $$r._raw->>'LastName'$$, true),
    ('salesforce', 'Lead', 'contact', 'email', $$r._raw->>'Email'$$, true),
    ('salesforce', 'Lead', 'contact', 'phone', $$coalesce(nullif(r._raw->>'Phone', ''), r._raw->>'MobilePhone')$$, true),
    ('salesforce', 'Lead', 'contact', 'company_name', $$r._raw->>'Company'$$, true),
    ('salesforce', 'Lead', 'contact', 'company_domain', $$r._raw->>'Website'$$, true),
    ('salesforce', 'Lead', 'contact', 'owner', $$r._raw->>'OwnerId'$$, true),
    ('salesforce', 'Lead', 'contact', 'lifecycle_stage', $$r._raw->>'Status'$$, true),
    ('salesforce', 'Lead', 'contact', 'title', $$r._raw->>'Title'$$, true),
    ('salesforce', 'Lead', 'contact', 'country', $$r._raw->>'Country'$$, true),
    ('salesforce', 'Lead', 'contact', 'created_at', $$r._raw->>'CreatedDate'$$, true),
    ('salesforce', 'Lead', 'contact', 'updated_at', $$r._updated_at$$, true),
    ('salesforce', 'Account', 'company', 'name', $$r._raw->>'Name'$$, true),
    ('salesforce', 'Account', 'company', 'domain', $$r._raw->>'Website'$$, true),
    ('salesforce', 'Account', 'company', 'phone', $$r._raw->>'Phone'$$, true),
    ('salesforce', 'Account', 'company', 'country', $$r._raw->>'BillingCountry'$$, true),
    ('salesforce', 'Account', 'company', 'industry', $$r._raw->>'Industry'$$, true),
    ('salesforce', 'Account', 'company', 'employees', $$r._raw->>'NumberOfEmployees'$$, true),
    ('salesforce', 'Account', 'company', 'annual_revenue', $$r._raw->>'AnnualRevenue'$$, true),
    ('salesforce', 'Account', 'company', 'owner', $$r._raw->>'OwnerId'$$, true),
    ('salesforce', 'Account', 'company', 'created_at', $$r._raw->>'CreatedDate'$$, true),
    ('salesforce', 'Account', 'company', 'updated_at', $$r._updated_at$$, true),
    ('salesforce', 'Opportunity', 'deal', 'name', $$r._raw->>'Name'$$, true),
    ('salesforce', 'Opportunity', 'deal', 'amount', $$r._raw->>'Amount'$$, true),
    ('salesforce', 'Opportunity', 'deal', 'currency', $$r._raw->>'CurrencyIsoCode'$$, true),
    ('salesforce', 'Opportunity', 'deal', 'stage', $$r._raw->>'StageName'$$, true),
    ('salesforce', 'Opportunity', 'deal', 'close_date', $$r._raw->>'CloseDate'$$, true),
    ('salesforce', 'Opportunity', 'deal', 'company_ref', $$r._raw->>'AccountId'$$, true),
    ('salesforce', 'Opportunity', 'deal', 'contact_ref', $$r._raw->>'ContactId'$$, true),
    ('salesforce', 'Opportunity', 'deal', 'owner', $$r._raw->>'OwnerId'$$, true),
    ('salesforce', 'Opportunity', 'deal', 'created_at', $$r._raw->>'CreatedDate'$$, true),
    ('salesforce', 'Opportunity', 'deal', 'updated_at', $$r._updated_at$$, true),
    -- Pipedrive (the shipped spec, API v2): emails and phones are lists of
    -- {value, primary, label}, the primary one first choice; custom fields
    -- are in r._raw->'custom_fields' by 40-character key.
    ('pipedrive', 'persons', 'contact', 'first_name', $$r._raw->>'first_name'$$, true),
    ('pipedrive', 'persons', 'contact', 'last_name', $$r._raw->>'last_name'$$, true),
    ('pipedrive', 'persons', 'contact', 'email', $$(SELECT e->>'value' FROM jsonb_array_elements(CASE jsonb_typeof(r._raw->'emails') WHEN 'array' THEN r._raw->'emails' ELSE '[]' END) WITH ORDINALITY AS x(e, n) ORDER BY (e->>'primary')::boolean IS TRUE DESC, n LIMIT 1)$$, true),
    ('pipedrive', 'persons', 'contact', 'phone', $$(SELECT e->>'value' FROM jsonb_array_elements(CASE jsonb_typeof(r._raw->'phones') WHEN 'array' THEN r._raw->'phones' ELSE '[]' END) WITH ORDINALITY AS x(e, n) ORDER BY (e->>'primary')::boolean IS TRUE DESC, n LIMIT 1)$$, true),
    ('pipedrive', 'persons', 'contact', 'company_ref', $$r._raw->>'org_id'$$, true),
    ('pipedrive', 'persons', 'contact', 'owner', $$r._raw->>'owner_id'$$, true),
    ('pipedrive', 'persons', 'contact', 'title', $$r._raw->>'job_title'$$, true),
    ('pipedrive', 'persons', 'contact', 'created_at', $$r._raw->>'add_time'$$, true),
    ('pipedrive', 'persons', 'contact', 'updated_at', $$r._updated_at$$, true),
    ('pipedrive', 'organizations', 'company', 'name', $$r._raw->>'name'$$, true),
    ('pipedrive', 'organizations', 'company', 'country', $$r._raw->'address'->>'country'$$, true),
    ('pipedrive', 'organizations', 'company', 'owner', $$r._raw->>'owner_id'$$, true),
    ('pipedrive', 'organizations', 'company', 'created_at', $$r._raw->>'add_time'$$, true),
    ('pipedrive', 'organizations', 'company', 'updated_at', $$r._updated_at$$, true),
    ('pipedrive', 'deals', 'deal', 'name', $$r._raw->>'title'$$, true),
    ('pipedrive', 'deals', 'deal', 'amount', $$r._raw->>'value'$$, true),
    ('pipedrive', 'deals', 'deal', 'currency', $$r._raw->>'currency'$$, true),
    ('pipedrive', 'deals', 'deal', 'stage', $$r._raw->>'stage_id'$$, true),
    ('pipedrive', 'deals', 'deal', 'close_date', $$r._raw->>'expected_close_date'$$, true),
    ('pipedrive', 'deals', 'deal', 'company_ref', $$r._raw->>'org_id'$$, true),
    ('pipedrive', 'deals', 'deal', 'contact_ref', $$r._raw->>'person_id'$$, true),
    ('pipedrive', 'deals', 'deal', 'owner', $$r._raw->>'owner_id'$$, true),
    ('pipedrive', 'deals', 'deal', 'created_at', $$r._raw->>'add_time'$$, true),
    ('pipedrive', 'deals', 'deal', 'updated_at', $$r._updated_at$$, true),
    -- Dynamics 365 (Dataverse): values are in r._raw by column logical
    -- name, lookups as _{name}_value (a GUID); option sets are numbers,
    -- their labels beside them as {name}@OData.Community.Display.V1.FormattedValue.
    ('dynamics', 'contact', 'contact', 'first_name', $$r._raw->>'firstname'$$, true),
    ('dynamics', 'contact', 'contact', 'last_name', $$r._raw->>'lastname'$$, true),
    ('dynamics', 'contact', 'contact', 'email', $$r._raw->>'emailaddress1'$$, true),
    ('dynamics', 'contact', 'contact', 'phone', $$coalesce(nullif(r._raw->>'telephone1', ''), r._raw->>'mobilephone')$$, true),
    ('dynamics', 'contact', 'contact', 'company_ref', $$r._raw->>'_parentcustomerid_value'$$, true),
    ('dynamics', 'contact', 'contact', 'owner', $$r._raw->>'_ownerid_value'$$, true),
    ('dynamics', 'contact', 'contact', 'title', $$r._raw->>'jobtitle'$$, true),
    ('dynamics', 'contact', 'contact', 'country', $$r._raw->>'address1_country'$$, true),
    ('dynamics', 'contact', 'contact', 'created_at', $$r._raw->>'createdon'$$, true),
    ('dynamics', 'contact', 'contact', 'updated_at', $$r._updated_at$$, true),
    ('dynamics', 'lead', 'contact', 'first_name', $$r._raw->>'firstname'$$, true),
    ('dynamics', 'lead', 'contact', 'last_name', $$r._raw->>'lastname'$$, true),
    ('dynamics', 'lead', 'contact', 'email', $$r._raw->>'emailaddress1'$$, true),
    ('dynamics', 'lead', 'contact', 'phone', $$coalesce(nullif(r._raw->>'telephone1', ''), r._raw->>'mobilephone')$$, true),
    ('dynamics', 'lead', 'contact', 'company_name', $$r._raw->>'companyname'$$, true),
    ('dynamics', 'lead', 'contact', 'company_domain', $$r._raw->>'websiteurl'$$, true),
    ('dynamics', 'lead', 'contact', 'owner', $$r._raw->>'_ownerid_value'$$, true),
    ('dynamics', 'lead', 'contact', 'lifecycle_stage', $$r._raw->>'statuscode@OData.Community.Display.V1.FormattedValue'$$, true),
    ('dynamics', 'lead', 'contact', 'title', $$r._raw->>'jobtitle'$$, true),
    ('dynamics', 'lead', 'contact', 'country', $$r._raw->>'address1_country'$$, true),
    ('dynamics', 'lead', 'contact', 'created_at', $$r._raw->>'createdon'$$, true),
    ('dynamics', 'lead', 'contact', 'updated_at', $$r._updated_at$$, true),
    ('dynamics', 'account', 'company', 'name', $$r._raw->>'name'$$, true),
    ('dynamics', 'account', 'company', 'domain', $$r._raw->>'websiteurl'$$, true),
    ('dynamics', 'account', 'company', 'phone', $$r._raw->>'telephone1'$$, true),
    ('dynamics', 'account', 'company', 'country', $$r._raw->>'address1_country'$$, true),
    ('dynamics', 'account', 'company', 'industry', $$r._raw->>'industrycode@OData.Community.Display.V1.FormattedValue'$$, true),
    ('dynamics', 'account', 'company', 'employees', $$r._raw->>'numberofemployees'$$, true),
    ('dynamics', 'account', 'company', 'annual_revenue', $$r._raw->>'revenue'$$, true),
    ('dynamics', 'account', 'company', 'owner', $$r._raw->>'_ownerid_value'$$, true),
    ('dynamics', 'account', 'company', 'created_at', $$r._raw->>'createdon'$$, true),
    ('dynamics', 'account', 'company', 'updated_at', $$r._updated_at$$, true),
    ('dynamics', 'opportunity', 'deal', 'name', $$r._raw->>'name'$$, true),
    ('dynamics', 'opportunity', 'deal', 'amount', $$r._raw->>'estimatedvalue'$$, true),
    ('dynamics', 'opportunity', 'deal', 'stage', $$coalesce(r._raw->>'salesstagecode@OData.Community.Display.V1.FormattedValue', r._raw->>'stepname')$$, true),
    ('dynamics', 'opportunity', 'deal', 'close_date', $$r._raw->>'estimatedclosedate'$$, true),
    ('dynamics', 'opportunity', 'deal', 'company_ref', $$r._raw->>'_customerid_value'$$, true),
    ('dynamics', 'opportunity', 'deal', 'contact_ref', $$r._raw->>'_parentcontactid_value'$$, true),
    ('dynamics', 'opportunity', 'deal', 'owner', $$r._raw->>'_ownerid_value'$$, true),
    ('dynamics', 'opportunity', 'deal', 'created_at', $$r._raw->>'createdon'$$, true),
    ('dynamics', 'opportunity', 'deal', 'updated_at', $$r._updated_at$$, true),
    -- Zoho CRM: values are in r._raw by field API name; lookups and owners
    -- are objects {name, id}; a wide module's record is its field groups
    -- joined by id.
    ('zoho', 'Contacts', 'contact', 'first_name', $$r._raw->>'First_Name'$$, true),
    ('zoho', 'Contacts', 'contact', 'last_name', $$r._raw->>'Last_Name'$$, true),
    ('zoho', 'Contacts', 'contact', 'email', $$r._raw->>'Email'$$, true),
    ('zoho', 'Contacts', 'contact', 'phone', $$coalesce(nullif(r._raw->>'Phone', ''), r._raw->>'Mobile')$$, true),
    ('zoho', 'Contacts', 'contact', 'company_ref', $$r._raw->'Account_Name'->>'id'$$, true),
    ('zoho', 'Contacts', 'contact', 'owner', $$r._raw->'Owner'->>'id'$$, true),
    ('zoho', 'Contacts', 'contact', 'title', $$r._raw->>'Title'$$, true),
    ('zoho', 'Contacts', 'contact', 'country', $$r._raw->>'Mailing_Country'$$, true),
    ('zoho', 'Contacts', 'contact', 'created_at', $$r._raw->>'Created_Time'$$, true),
    ('zoho', 'Contacts', 'contact', 'updated_at', $$r._updated_at$$, true),
    ('zoho', 'Leads', 'contact', 'first_name', $$r._raw->>'First_Name'$$, true),
    ('zoho', 'Leads', 'contact', 'last_name', $$r._raw->>'Last_Name'$$, true),
    ('zoho', 'Leads', 'contact', 'email', $$r._raw->>'Email'$$, true),
    ('zoho', 'Leads', 'contact', 'phone', $$coalesce(nullif(r._raw->>'Phone', ''), r._raw->>'Mobile')$$, true),
    ('zoho', 'Leads', 'contact', 'company_name', $$r._raw->>'Company'$$, true),
    ('zoho', 'Leads', 'contact', 'company_domain', $$r._raw->>'Website'$$, true),
    ('zoho', 'Leads', 'contact', 'owner', $$r._raw->'Owner'->>'id'$$, true),
    ('zoho', 'Leads', 'contact', 'lifecycle_stage', $$r._raw->>'Lead_Status'$$, true),
    ('zoho', 'Leads', 'contact', 'title', $$r._raw->>'Designation'$$, true),
    ('zoho', 'Leads', 'contact', 'country', $$r._raw->>'Country'$$, true),
    ('zoho', 'Leads', 'contact', 'created_at', $$r._raw->>'Created_Time'$$, true),
    ('zoho', 'Leads', 'contact', 'updated_at', $$r._updated_at$$, true),
    ('zoho', 'Accounts', 'company', 'name', $$r._raw->>'Account_Name'$$, true),
    ('zoho', 'Accounts', 'company', 'domain', $$r._raw->>'Website'$$, true),
    ('zoho', 'Accounts', 'company', 'phone', $$r._raw->>'Phone'$$, true),
    ('zoho', 'Accounts', 'company', 'country', $$r._raw->>'Billing_Country'$$, true),
    ('zoho', 'Accounts', 'company', 'industry', $$r._raw->>'Industry'$$, true),
    ('zoho', 'Accounts', 'company', 'employees', $$r._raw->>'Employees'$$, true),
    ('zoho', 'Accounts', 'company', 'annual_revenue', $$r._raw->>'Annual_Revenue'$$, true),
    ('zoho', 'Accounts', 'company', 'owner', $$r._raw->'Owner'->>'id'$$, true),
    ('zoho', 'Accounts', 'company', 'created_at', $$r._raw->>'Created_Time'$$, true),
    ('zoho', 'Accounts', 'company', 'updated_at', $$r._updated_at$$, true),
    ('zoho', 'Deals', 'deal', 'name', $$r._raw->>'Deal_Name'$$, true),
    ('zoho', 'Deals', 'deal', 'amount', $$r._raw->>'Amount'$$, true),
    ('zoho', 'Deals', 'deal', 'stage', $$r._raw->>'Stage'$$, true),
    ('zoho', 'Deals', 'deal', 'close_date', $$r._raw->>'Closing_Date'$$, true),
    ('zoho', 'Deals', 'deal', 'company_ref', $$r._raw->'Account_Name'->>'id'$$, true),
    ('zoho', 'Deals', 'deal', 'contact_ref', $$r._raw->'Contact_Name'->>'id'$$, true),
    ('zoho', 'Deals', 'deal', 'owner', $$r._raw->'Owner'->>'id'$$, true),
    ('zoho', 'Deals', 'deal', 'created_at', $$r._raw->>'Created_Time'$$, true),
    ('zoho', 'Deals', 'deal', 'updated_at', $$r._updated_at$$, true);

-- How records are found to be the same. Rules are tried in position order;
-- keys are match keys computed from the cleaned fields (email, phone, name,
-- domain, company_name, company). Two records with equal values for every
-- key of an enabled rule (none NULL) are one unified row.
CREATE TABLE crm_sync.match_rules (
    entity      text NOT NULL CHECK (entity IN ('contact', 'company', 'deal')),
    position    integer NOT NULL,
    name        text NOT NULL,
    keys        text[] NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    is_default  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (entity, name),
    CONSTRAINT match_rules_keys CHECK (keys <@ ARRAY['email', 'phone', 'name', 'domain', 'company_name', 'company', 'contact'] AND cardinality(keys) > 0)
);
COMMENT ON TABLE crm_sync.match_rules IS
    'Identity resolution rules, in position order. keys: email (normalised), phone (E.164), name (first and last name, accents and punctuation dropped), domain (bare website domain), company_name (company name without legal form), company (the unified company a contact or deal belongs to), contact (the unified primary contact of a deal). Disable a rule with enabled = false; add your own.';
INSERT INTO crm_sync.match_rules VALUES
    ('contact', 1, 'email', '{email}', true, true),
    ('contact', 2, 'phone_and_name', '{phone,name}', true, true),
    ('company', 1, 'domain', '{domain}', true, true),
    ('company', 2, 'name', '{company_name}', true, true),
    ('deal', 1, 'company_and_name', '{company,name}', true, true),
    -- Off by default: within one CRM, a contact's deals often share a name
    -- (HubSpot's default "<contact> - New Deal").
    ('deal', 2, 'contact_and_name', '{contact,name}', false, true);

-- A per-field source order that beats "most recently modified wins".
CREATE TABLE crm_sync.field_priority (
    entity  text NOT NULL,
    field   text NOT NULL,
    sources text[] NOT NULL,
    PRIMARY KEY (entity, field)
);
COMMENT ON TABLE crm_sync.field_priority IS
    'For a unified field, the sources whose values win, first to last, over the default rule (the most recently modified source record wins). Sources not listed come after, newest first.';

-- Each source record, cleaned, with its match keys and unified id.
CREATE TABLE crm_sync.source_records (
    entity       text NOT NULL,
    source       text NOT NULL,
    stream       text NOT NULL,
    external_id  text NOT NULL,
    record_id    bigint NOT NULL,
    updated_at   timestamptz,
    deleted      boolean NOT NULL DEFAULT false,
    vals         jsonb NOT NULL DEFAULT '{}',
    email        text,
    phone        text,
    name_key     text,
    domain       text,
    company_key  text,
    company_ref  text,
    company_id   bigint,
    contact_ref  text,
    contact_id   bigint,
    -- The record (same entity and stream, by record_id) the CRM merged
    -- this one into: linked into one unified row with it.
    merged_into  bigint,
    -- A hash of each match key the record has (email, name_key, domain,
    -- company_key; crm_sync_core::model::identity::key_hash): the records
    -- sharing a key with changed ones are found through one GIN index of
    -- it, then compared by value.
    keys         bigint[] NOT NULL DEFAULT '{}',
    first_seen   timestamptz NOT NULL DEFAULT now(),
    merged_at    timestamptz NOT NULL DEFAULT now(),
    -- When the merge last linked the record: staged new, or its match
    -- keys, references, merge or deletion changed (a record whose values
    -- alone changed keeps its links: only its unified row is recomputed).
    linked_at    timestamptz NOT NULL DEFAULT now(),
    -- record_id is a hash of (entity, source, stream, external_id): one
    -- integer key instead of four text columns, which makes staging cheaper.
    PRIMARY KEY (entity, record_id)
-- Room on each page for a new version of a record or two: a record whose
-- values alone changed (the usual incremental merge) is rewritten on its
-- page (a HOT update), without a new entry in any of its indexes. An
-- incremental merge of 4,000 changed titles among 400,000 records spent
-- 71-113 ms writing them instead of 126-208 (alternating, same hour).
) WITH (fillfactor = 90);
-- One GIN index of every match key's hash instead of a b-tree per key:
-- a record's keys go to the index's pending list and reach its tree
-- sorted, in bulk, where a b-tree insert lands on a random page for each
-- key (400,000 records in landing order, keys random, wrote in 4.1 s
-- instead of 7.2 s with the b-trees). Every scan reads the pending list
-- whole: the merge flushes it before it looks keys up, and after a merge
-- of a whole entity. No phone in it: the shipped rule pairs it with the
-- name. The merge finds a record by its CRM id through the primary key
-- (crm_sync.source_record_id); crm.identities users, by the CRM id alone
-- (CRMs hand ids out in order: these inserts land next to each other).
CREATE INDEX source_records_keys ON crm_sync.source_records USING gin (keys);
CREATE INDEX source_records_external_id ON crm_sync.source_records (external_id);
-- Move the pending list of source_records_keys into its tree, before the
-- merge looks keys up (a scan reads the whole pending list, for each key
-- it looks for), in bounded memory (the flush gathers entries in
-- maintenance_work_mem; the pending list holds at most
-- gin_pending_list_limit, 4 MB by default). The merge runs as the
-- extension's owner, who owns the index (gin_clean_pending_list() is the
-- owner's); nobody else may call it.
CREATE FUNCTION crm_sync._flush_match_keys() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET maintenance_work_mem = '16MB'
AS $$ SELECT pg_catalog.gin_clean_pending_list('crm_sync.source_records_keys'::pg_catalog.regclass) $$;
-- The lineage of a unified row of one record (src/sql_api/model.rs):
-- each of fields (a JSON array of names) that is a key of vals -> 1. The
-- merge writes most rows with it; PUBLIC may not run it (sql/access.sql).
CREATE FUNCTION crm_sync._lineage_of_one(vals jsonb, fields text) RETURNS jsonb
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'lineage_of_one_wrapper';
CREATE INDEX source_records_company ON crm_sync.source_records (entity, company_id) WHERE company_id IS NOT NULL;
CREATE INDEX source_records_contact ON crm_sync.source_records (entity, contact_id) WHERE contact_id IS NOT NULL;
-- References whose record has not landed (yet): linked again by every merge.
CREATE INDEX source_records_company_pending ON crm_sync.source_records (entity)
    WHERE company_id IS NULL AND company_ref IS NOT NULL;
CREATE INDEX source_records_contact_pending ON crm_sync.source_records (entity)
    WHERE contact_id IS NULL AND contact_ref IS NOT NULL;
CREATE INDEX source_records_merged ON crm_sync.source_records (entity, merged_into) WHERE merged_into IS NOT NULL;
COMMENT ON TABLE crm_sync.source_records IS
    'Every landed record that feeds the unified model, with its cleaned values (vals), match keys and unified id. Maintained by crm_sync.merge().';

-- Work space of a whole merge's linking when more records share keys than
-- crm_sync.merge_link_in_memory: each such record with the earliest record
-- (first seen, then smallest id) it is known to be linked to, lowered in
-- rounds until no label moves (connected components in SQL, in flat
-- memory). Emptied before and after each use; merges take turns (an
-- advisory lock), and nothing in it outlives one: unlogged.
CREATE UNLOGGED TABLE crm_sync.link_labels (
    record_id  bigint PRIMARY KEY,
    -- Its label, the earliest record linked to it so far: that record's
    -- first_seen (microseconds since the epoch) and id.
    lfs        bigint NOT NULL,
    lid        bigint NOT NULL
-- Room on each page for the labels' new versions (HOT updates).
) WITH (fillfactor = 50);

-- Which unified row each source record belongs to, for the records that
-- are not their row's own: a record without a row here is in the row of
-- its own id (most records: rows of one record), so a record's unified id
-- is coalesce(unified_id, record_id). Apart from source_records, so that
-- re-linking rewrites only this narrow table.
CREATE TABLE crm_sync.unified_ids (
    entity      text NOT NULL,
    record_id   bigint NOT NULL,
    unified_id  bigint NOT NULL CHECK (unified_id <> record_id),
    PRIMARY KEY (entity, record_id)
);
CREATE INDEX unified_ids_unified ON crm_sync.unified_ids (entity, unified_id);

-- Values that failed cleaning (kept as landed; the unified field gets none).
CREATE TABLE crm_sync.invalid_values (
    entity       text NOT NULL,
    source       text NOT NULL,
    stream       text NOT NULL,
    external_id  text NOT NULL,
    field        text NOT NULL,
    value        text NOT NULL,
    problem      text NOT NULL,
    PRIMARY KEY (entity, source, stream, external_id, field)
);

CREATE VIEW crm_sync.quality AS
SELECT r.source, r.stream, r.entity, f.field,
       count(*) FILTER (WHERE r.vals ? f.field) AS valid,
       (SELECT count(*) FROM crm_sync.invalid_values i
         WHERE i.source = r.source AND i.stream = r.stream AND i.field = f.field) AS invalid,
       (SELECT array_agg(v.value ORDER BY v.external_id) FROM (
            SELECT i.value, i.external_id FROM crm_sync.invalid_values i
             WHERE i.source = r.source AND i.stream = r.stream AND i.field = f.field
             ORDER BY i.external_id LIMIT 5) v) AS invalid_samples
  FROM crm_sync.source_records r
  JOIN crm_sync.unified_fields f ON f.entity = r.entity
 WHERE f.kind IN ('email', 'phone', 'domain', 'country', 'numeric', 'date', 'timestamptz')
 GROUP BY r.source, r.stream, r.entity, f.field;
COMMENT ON VIEW crm_sync.quality IS
    'Per source, stream and cleaned field: how many values were valid and how many invalid (kept in the landing table, left out of the unified model), with a few invalid samples.';

CREATE TABLE crm.contacts (
    id               bigint PRIMARY KEY,
    first_name       text,
    last_name        text,
    email            text,
    phone            text,
    company_name     text,
    company_domain   text,
    company_id       bigint,
    owner            text,
    lifecycle_stage  text,
    title            text,
    country          text,
    created_at       timestamptz,
    updated_at       timestamptz,
    deleted_at       timestamptz,
    sources          text[] NOT NULL DEFAULT '{}',
    lineage          jsonb NOT NULL DEFAULT '{}',
    merged_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE crm.companies (
    id               bigint PRIMARY KEY,
    name             text,
    domain           text,
    phone            text,
    country          text,
    industry         text,
    employees        numeric,
    annual_revenue   numeric,
    owner            text,
    lifecycle_stage  text,
    created_at       timestamptz,
    updated_at       timestamptz,
    deleted_at       timestamptz,
    sources          text[] NOT NULL DEFAULT '{}',
    lineage          jsonb NOT NULL DEFAULT '{}',
    merged_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE crm.deals (
    id               bigint PRIMARY KEY,
    name             text,
    amount           numeric,
    currency         text,
    stage            text,
    close_date       date,
    company_id       bigint,
    contact_id       bigint,
    owner            text,
    created_at       timestamptz,
    updated_at       timestamptz,
    deleted_at       timestamptz,
    sources          text[] NOT NULL DEFAULT '{}',
    lineage          jsonb NOT NULL DEFAULT '{}',
    merged_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE crm.contacts IS 'People from every source, one row per person (HubSpot contacts, Salesforce contacts and leads). sources lists source/stream/id of the records merged; crm.field_lineage says which supplied each value.';
COMMENT ON TABLE crm.companies IS 'Companies from every source (HubSpot companies, Salesforce accounts), one row per company.';
COMMENT ON TABLE crm.deals IS 'Deals from every source (HubSpot deals, Salesforce opportunities), linked to their unified company (company_id) and primary contact (contact_id).';

-- The crosswalk: unified id <-> source records.
CREATE VIEW crm.identities AS
-- (A record without a unified_ids row is in the row of its own id; in two
-- branches, so that a lookup by unified id reads each through an index.)
SELECT r.entity, u.unified_id, r.source, r.stream, r.external_id, r.deleted, r.updated_at
  FROM crm_sync.unified_ids u
  JOIN crm_sync.source_records r ON r.entity = u.entity AND r.record_id = u.record_id
UNION ALL
SELECT r.entity, r.record_id, r.source, r.stream, r.external_id, r.deleted, r.updated_at
  FROM crm_sync.source_records r
 WHERE NOT EXISTS (SELECT 1 FROM crm_sync.unified_ids u WHERE u.entity = r.entity AND u.record_id = r.record_id);
COMMENT ON VIEW crm.identities IS 'Which source record (source, stream, CRM id) each unified id merges.';

CREATE TABLE crm.merged_ids (
    entity     text NOT NULL,
    old_id     bigint NOT NULL,
    new_id     bigint NOT NULL,
    merged_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, old_id)
);
COMMENT ON TABLE crm.merged_ids IS 'Unified ids that were merged into another (a later link showed two rows were one): old_id now lives on as new_id.';

CREATE VIEW crm.field_lineage AS
WITH l AS (
    SELECT 'contact'::text AS entity, u.id, l.key AS field, u.sources[l.value::int] AS rec
      FROM crm.contacts u, jsonb_each_text(u.lineage) l
    UNION ALL
    SELECT 'company', u.id, l.key, u.sources[l.value::int] FROM crm.companies u, jsonb_each_text(u.lineage) l
    UNION ALL
    SELECT 'deal', u.id, l.key, u.sources[l.value::int] FROM crm.deals u, jsonb_each_text(u.lineage) l)
SELECT l.entity, l.id AS unified_id, l.field, r.source, r.stream, r.external_id, r.updated_at AS source_updated_at
  FROM l
  CROSS JOIN LATERAL (SELECT split_part(l.rec, '/', 1) AS source, split_part(l.rec, '/', 2) AS stream,
                             substr(l.rec, length(split_part(l.rec, '/', 1)) + length(split_part(l.rec, '/', 2)) + 3)
                                 AS external_id) k
  JOIN crm_sync.source_records r
    ON r.entity = l.entity
   AND r.record_id = crm_sync.source_record_id(l.entity, k.source, k.stream, k.external_id)
   AND r.source = k.source AND r.stream = k.stream AND r.external_id = k.external_id;
COMMENT ON VIEW crm.field_lineage IS 'For each unified row and field: the source record whose value it holds, and when that record was modified (from the rows'' lineage columns: field -> position of the record in sources).';

-- How far each entity has staged each stream: a stream mapped to two
-- entities is read by each from its own place.
CREATE TABLE crm_sync.merge_state (
    entity      text NOT NULL,
    source      text NOT NULL,
    stream      text NOT NULL,
    merged_run  bigint NOT NULL,
    merged_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, source, stream)
);

-- Shipped rows (is_default) are not dumped: CREATE EXTENSION puts them back.
-- A user's change to one must survive pg_dump all the same, so editing a
-- shipped row makes it the user's (is_default = false, dumped), and
-- deleting one, editing it or replacing it leaves a tombstone of its key
-- in crm_sync.removed_defaults (dumped). At restore, CREATE EXTENSION
-- inserts the shipped rows first; then every tombstone and every user row
-- loaded removes the shipped row of its key, in whichever order they come.
CREATE TABLE crm_sync.removed_defaults (
    tbl         text NOT NULL CHECK (tbl IN ('mappings', 'match_rules')),
    key         text[] NOT NULL,
    removed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tbl, key)
);
COMMENT ON TABLE crm_sync.removed_defaults IS
    'Shipped mappings and match rules a user edited, replaced or deleted (key: provider, object, field, source or ''''; or entity, name). Kept so that a restore, which reinstalls the shipped rows, removes them again. Written by triggers; dumped by pg_dump.';

-- The key of a mappings or match_rules row.
CREATE FUNCTION crm_sync._default_key(tbl text, r jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE tbl
        WHEN 'mappings' THEN ARRAY[r->>'provider', r->>'object', r->>'field', coalesce(r->>'source', '')]
        ELSE ARRAY[r->>'entity', r->>'name'] END
$$;

-- A tombstone removes the shipped row of its key (AFTER INSERT). One
-- already there is not written twice but keeps the earlier time: a restore
-- loads user rows and tombstones in either order, and a user row loaded
-- first has left a tombstone of its own (BEFORE INSERT).
CREATE FUNCTION crm_sync._merge_tombstone() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE crm_sync.removed_defaults d SET removed_at = least(d.removed_at, NEW.removed_at)
     WHERE d.tbl = NEW.tbl AND d.key = NEW.key;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;
-- Delete the shipped row of a key (from crm_sync._default_key).
CREATE FUNCTION crm_sync._drop_shipped(tbl text, key text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tbl = 'mappings' THEN
        DELETE FROM crm_sync.mappings m
         WHERE m.is_default AND ARRAY[m.provider, m.object, m.field, coalesce(m.source, '')] = key;
    ELSE
        DELETE FROM crm_sync.match_rules m WHERE m.is_default AND ARRAY[m.entity, m.name] = key;
    END IF;
END;
$$;
CREATE FUNCTION crm_sync._apply_tombstone() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM crm_sync._drop_shipped(NEW.tbl, NEW.key);
    RETURN NULL;
END;
$$;
CREATE TRIGGER removed_defaults_merge BEFORE INSERT ON crm_sync.removed_defaults
    FOR EACH ROW EXECUTE FUNCTION crm_sync._merge_tombstone();
CREATE TRIGGER removed_defaults_apply AFTER INSERT ON crm_sync.removed_defaults
    FOR EACH ROW EXECUTE FUNCTION crm_sync._apply_tombstone();

-- On mappings and match_rules: a shipped row updated becomes the user's; a
-- user row inserted replaces the shipped row of its key (BEFORE). A shipped
-- row updated or deleted leaves a tombstone of the key it had (AFTER: the
-- row is no longer shipped then, so the tombstone removes nothing more).
CREATE FUNCTION crm_sync._track_defaults() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.is_default := false;
    ELSIF NOT NEW.is_default THEN
        PERFORM crm_sync._drop_shipped(TG_TABLE_NAME, crm_sync._default_key(TG_TABLE_NAME, pg_catalog.to_jsonb(NEW)));
    END IF;
    RETURN NEW;
END;
$$;
CREATE FUNCTION crm_sync._tombstone_default() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO crm_sync.removed_defaults (tbl, key)
    VALUES (TG_TABLE_NAME, crm_sync._default_key(TG_TABLE_NAME, pg_catalog.to_jsonb(OLD)));
    RETURN NULL;
END;
$$;
CREATE TRIGGER mappings_track_defaults BEFORE INSERT OR UPDATE ON crm_sync.mappings
    FOR EACH ROW EXECUTE FUNCTION crm_sync._track_defaults();
CREATE TRIGGER match_rules_track_defaults BEFORE INSERT OR UPDATE ON crm_sync.match_rules
    FOR EACH ROW EXECUTE FUNCTION crm_sync._track_defaults();
CREATE TRIGGER mappings_tombstone AFTER UPDATE OR DELETE ON crm_sync.mappings
    FOR EACH ROW WHEN (OLD.is_default) EXECUTE FUNCTION crm_sync._tombstone_default();
CREATE TRIGGER match_rules_tombstone AFTER UPDATE OR DELETE ON crm_sync.match_rules
    FOR EACH ROW WHEN (OLD.is_default) EXECUTE FUNCTION crm_sync._tombstone_default();

SELECT pg_catalog.pg_extension_config_dump('crm_sync.mappings', 'WHERE NOT is_default');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.removed_defaults', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.match_rules', 'WHERE NOT is_default');
SELECT pg_catalog.pg_extension_config_dump('crm.merged_ids', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.field_priority', '');
-- The model itself, so that a restored database keeps its unified ids (a
-- group's id depends on when each record was first seen) and goes on
-- merging incrementally.
SELECT pg_catalog.pg_extension_config_dump('crm_sync.source_records', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.unified_ids', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.invalid_values', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.merge_state', '');
SELECT pg_catalog.pg_extension_config_dump('crm.contacts', '');
SELECT pg_catalog.pg_extension_config_dump('crm.companies', '');
SELECT pg_catalog.pg_extension_config_dump('crm.deals', '');
