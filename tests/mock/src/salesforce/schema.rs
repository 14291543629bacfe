//! Salesforce objects and fields: what `describeGlobal` and
//! `sobjects/{Name}/describe` report and what SOQL may name. Field shapes
//! follow the recorded describe responses in shared/fixtures/salesforce.

use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub label: String,
    /// Salesforce field type: id, string, picklist, multipicklist, email,
    /// phone, url, textarea, reference, boolean, int, double, currency,
    /// percent, date, datetime, time, address, location, anyType.
    pub ftype: String,
    pub length: u32,
    pub precision: u32,
    pub scale: u32,
    pub digits: u32,
    pub custom: bool,
    pub nillable: bool,
    pub picklist: Vec<String>,
    pub reference_to: Vec<String>,
    /// The compound field this one is a part of (`compoundFieldName`): an
    /// address or location, or `Name` for a person's name parts.
    pub compound: Option<String>,
    pub name_field: bool,
    /// Neither createable nor updateable through the API (a person's `Name`,
    /// which Salesforce builds from its parts).
    pub read_only: bool,
    /// Neither filterable nor sortable, whatever its type (set through
    /// the admin API: some objects' SystemModstamp is so).
    pub no_filter: bool,
    /// A formula (describe's `calculated`): its value changes without
    /// SystemModstamp moving, and it cannot be written.
    pub formula: Option<&'static str>,
}

impl Field {
    fn new(name: &str, label: &str, ftype: &str) -> Field {
        let (length, precision, scale, digits) = match ftype {
            "id" | "reference" => (18, 0, 0, 0),
            "string" | "url" | "email" => (255, 0, 0, 0),
            "phone" => (40, 0, 0, 0),
            "picklist" | "multipicklist" => (255, 0, 0, 0),
            "textarea" => (255, 0, 0, 0),
            "int" => (0, 0, 0, 9),
            "double" | "percent" => (0, 18, 2, 0),
            "currency" => (0, 18, 2, 0),
            _ => (0, 0, 0, 0),
        };
        Field {
            name: name.into(),
            label: label.into(),
            ftype: ftype.into(),
            length,
            precision,
            scale,
            digits,
            custom: name.ends_with("__c") || name.ends_with("__s"),
            nillable: !matches!(ftype, "id" | "boolean"),
            picklist: Vec::new(),
            reference_to: Vec::new(),
            compound: None,
            name_field: false,
            read_only: false,
            no_filter: false,
            formula: None,
        }
    }

    /// An address or location compound field: selectable in REST queries
    /// (as a JSON object), never filtered, sorted or selected by Bulk. A
    /// person's `Name` is a plain string, not one of these.
    pub fn is_compound(&self) -> bool {
        matches!(self.ftype.as_str(), "address" | "location")
    }

    pub fn is_number(&self) -> bool {
        matches!(
            self.ftype.as_str(),
            "int" | "double" | "currency" | "percent"
        )
    }

    /// Long text areas can be neither filtered nor sorted in SOQL.
    pub fn filterable(&self) -> bool {
        let long_text = self.ftype == "textarea" && self.length > 255;
        !(self.no_filter || long_text || self.ftype == "anyType")
    }

    pub fn sortable(&self) -> bool {
        self.filterable() && !self.is_compound() && self.ftype != "multipicklist"
    }

    fn soap_type(&self) -> &'static str {
        match self.ftype.as_str() {
            "id" | "reference" => "tns:ID",
            "boolean" => "xsd:boolean",
            "int" => "xsd:int",
            "double" | "currency" | "percent" => "xsd:double",
            "date" => "xsd:date",
            "datetime" => "xsd:dateTime",
            "time" => "xsd:time",
            "address" => "urn:address",
            "location" => "urn:location",
            "anyType" => "xsd:anyType",
            _ => "xsd:string",
        }
    }

    pub fn describe(&self) -> Value {
        let audit = matches!(
            self.name.as_str(),
            "Id" | "IsDeleted"
                | "CreatedDate"
                | "CreatedById"
                | "LastModifiedDate"
                | "LastModifiedById"
                | "SystemModstamp"
        );
        let picklist: Vec<Value> = self
            .picklist
            .iter()
            .map(|v| json!({"active": true, "defaultValue": false, "label": v, "validFor": null, "value": v}))
            .collect();
        let byte_length = match self.ftype.as_str() {
            "id" | "reference" => 18,
            t if self.length > 0 && t != "int" => self.length * 3,
            _ => 0,
        };
        json!({
            "aggregatable": self.sortable(),
            "aiPredictionField": false,
            "autoNumber": false,
            "byteLength": byte_length,
            "calculated": self.formula.is_some(),
            "calculatedFormula": self.formula,
            "cascadeDelete": false,
            "caseSensitive": false,
            "compoundFieldName": self.compound,
            "controllerName": null,
            "createable": !audit && !self.is_compound() && !self.read_only,
            "custom": self.custom,
            "defaultValue": if self.ftype == "boolean" { json!(false) } else { Value::Null },
            "defaultValueFormula": null,
            "defaultedOnCreate": audit || self.ftype == "boolean",
            "dependentPicklist": false,
            "deprecatedAndHidden": false,
            "digits": self.digits,
            "displayLocationInDecimal": false,
            "encrypted": false,
            "externalId": false,
            "extraTypeInfo": null,
            "filterable": self.filterable(),
            "filteredLookupInfo": null,
            "formulaTreatNullNumberAsZero": false,
            "groupable": self.sortable() && !matches!(self.ftype.as_str(), "double" | "currency" | "percent" | "datetime"),
            "highScaleNumber": false,
            "htmlFormatted": false,
            "idLookup": self.name == "Id" || self.name_field,
            "inlineHelpText": null,
            "label": self.label,
            "length": self.length,
            "mask": null,
            "maskType": null,
            "name": self.name,
            "nameField": self.name_field,
            "namePointing": false,
            "nillable": self.nillable,
            "permissionable": !audit && self.nillable,
            "picklistValues": picklist,
            "polymorphicForeignKey": false,
            "precision": self.precision,
            "queryByDistance": self.is_compound(),
            "referenceTargetField": null,
            "referenceTo": self.reference_to,
            "relationshipName": self.reference_to.first().map(|_| self.name.trim_end_matches("Id").trim_end_matches("__c").to_owned()),
            "relationshipOrder": null,
            "restrictedDelete": false,
            "restrictedPicklist": false,
            "scale": self.scale,
            "searchPrefilterable": false,
            "soapType": self.soap_type(),
            "sortable": self.sortable(),
            "type": self.ftype,
            "unique": false,
            "updateable": !audit && !self.is_compound() && !self.read_only,
            "writeRequiresMasterRead": false,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Object {
    pub name: String,
    pub label: String,
    pub label_plural: String,
    pub key_prefix: String,
    pub custom: bool,
    pub fields: Vec<Field>,
    /// describeGlobal's `queryable` (false: every query is INVALID_TYPE).
    pub queryable: bool,
    /// Fields one of which a query must filter on ("Implementation
    /// restriction"); empty: none.
    pub filter_on: Vec<&'static str>,
}

impl Object {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }

    /// The field the time index is kept on: SystemModstamp where the object
    /// has it, else LastModifiedDate, else CreatedDate.
    pub fn time_field(&self) -> &'static str {
        if self.has("SystemModstamp") {
            "SystemModstamp"
        } else if self.has("LastModifiedDate") {
            "LastModifiedDate"
        } else {
            "CreatedDate"
        }
    }

    pub fn components(&self, compound: &str) -> Vec<&Field> {
        self.fields
            .iter()
            .filter(|f| f.compound.as_deref() == Some(compound))
            .collect()
    }

    fn urls(&self, v: &str) -> Value {
        let base = format!("/services/data/v{v}/sobjects/{}", self.name);
        json!({
            "compactLayouts": format!("{base}/describe/compactLayouts"),
            "rowTemplate": format!("{base}/{{ID}}"),
            "approvalLayouts": format!("{base}/describe/approvalLayouts"),
            "listviews": format!("{base}/listviews"),
            "describe": format!("{base}/describe"),
            "quickActions": format!("{base}/quickActions"),
            "layouts": format!("{base}/describe/layouts"),
            "sobject": base,
        })
    }

    /// One entry of `GET sobjects` (describeGlobal).
    pub fn global_entry(&self, v: &str) -> Value {
        let history = self.name.ends_with("History");
        let writable = !history && self.name != "UserLogin";
        json!({
            "activateable": false,
            "associateEntityType": if history { json!("History") } else { Value::Null },
            "associateParentEntity": if history { json!(self.name.trim_end_matches("History")) } else { Value::Null },
            "createable": writable,
            "custom": self.custom,
            "customSetting": false,
            "deepCloneable": false,
            "deletable": writable,
            "deprecatedAndHidden": false,
            "feedEnabled": writable,
            "hasSubtypes": false,
            "isInterface": false,
            "isSubtype": false,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": self.label_plural,
            "layoutable": writable,
            "mergeable": matches!(self.name.as_str(), "Account" | "Contact" | "Lead"),
            "mruEnabled": writable,
            "name": self.name,
            "queryable": self.queryable,
            "replicateable": self.has("SystemModstamp"),
            "retrieveable": true,
            "searchable": writable,
            "triggerable": writable,
            "undeletable": self.has("IsDeleted") && writable,
            "updateable": writable,
            "urls": self.urls(v),
        })
    }

    /// `GET sobjects/{Name}/describe`.
    pub fn describe(&self, v: &str) -> Value {
        let mut d = self.global_entry(v);
        let m = d.as_object_mut().expect("an object");
        m.remove("associateEntityType");
        m.remove("associateParentEntity");
        m.insert("actionOverrides".into(), json!([]));
        m.insert("childRelationships".into(), json!([]));
        m.insert("compactLayoutable".into(), json!(true));
        m.insert("defaultImplementation".into(), Value::Null);
        m.insert("extendedBy".into(), Value::Null);
        m.insert("extendsInterfaces".into(), Value::Null);
        m.insert("implementedBy".into(), Value::Null);
        m.insert("implementsInterfaces".into(), Value::Null);
        m.insert("listviewable".into(), Value::Null);
        m.insert("lookupLayoutable".into(), Value::Null);
        m.insert("namedLayoutInfos".into(), json!([]));
        m.insert("networkScopeFieldName".into(), Value::Null);
        m.insert(
            "recordTypeInfos".into(),
            json!([{"active": true, "available": true, "defaultRecordTypeMapping": true, "developerName": "Master", "master": true, "name": "Master", "recordTypeId": "012000000000000AAA", "urls": {"layout": format!("/services/data/v{v}/sobjects/{}/describe/layouts/012000000000000AAA", self.name)}}]),
        );
        m.insert("searchLayoutable".into(), json!(true));
        m.insert(
            "supportedScopes".into(),
            json!([{"label": "All", "name": "everything"}]),
        );
        m.insert(
            "fields".into(),
            Value::Array(self.fields.iter().map(Field::describe).collect()),
        );
        d
    }
}

/// Builds an object's field list tersely.
struct B(Vec<Field>);

impl B {
    fn f(mut self, name: &str, label: &str, ftype: &str) -> B {
        self.0.push(Field::new(name, label, ftype));
        self
    }
    fn pick(mut self, name: &str, label: &str, values: &[&str]) -> B {
        let mut f = Field::new(name, label, "picklist");
        f.picklist = values.iter().map(|s| s.to_string()).collect();
        self.0.push(f);
        self
    }
    fn multi(mut self, name: &str, label: &str, values: &[&str]) -> B {
        let mut f = Field::new(name, label, "multipicklist");
        f.picklist = values.iter().map(|s| s.to_string()).collect();
        f.length = 4099;
        self.0.push(f);
        self
    }
    fn reference(mut self, name: &str, label: &str, to: &str) -> B {
        let mut f = Field::new(name, label, "reference");
        f.reference_to = vec![to.into()];
        self.0.push(f);
        self
    }
    fn name_field(mut self, name: &str, label: &str) -> B {
        let mut f = Field::new(name, label, "string");
        f.name_field = true;
        f.nillable = false;
        f.length = if name == "Name" { 255 } else { 80 };
        self.0.push(f);
        self
    }
    /// A person's name as Contact, Lead and User have it: `LastName` and
    /// `FirstName` with `compoundFieldName` `Name`, then `Name` itself, a
    /// read-only string (lengths as in the recorded describes).
    fn person_name(mut self) -> B {
        for (name, label, len, nillable) in [
            ("LastName", "Last Name", 80, false),
            ("FirstName", "First Name", 40, true),
        ] {
            let mut f = Field::new(name, label, "string");
            f.length = len;
            f.nillable = nillable;
            f.compound = Some("Name".into());
            self.0.push(f);
        }
        let mut f = Field::new("Name", "Full Name", "string");
        f.name_field = true;
        f.nillable = false;
        f.read_only = true;
        f.length = 121;
        self.0.push(f);
        self
    }
    /// With `len` for a textarea over 255 characters (a long text area).
    fn formula(mut self, name: &str, label: &str, ftype: &str, formula: &'static str) -> B {
        let mut f = Field::new(name, label, ftype);
        f.formula = Some(formula);
        f.read_only = true;
        self.0.push(f);
        self
    }

    fn text(mut self, name: &str, label: &str, len: u32) -> B {
        let mut f = Field::new(name, label, "textarea");
        f.length = len;
        self.0.push(f);
        self
    }
    /// A number with the given precision and scale.
    fn num(mut self, name: &str, label: &str, ftype: &str, precision: u32, scale: u32) -> B {
        let mut f = Field::new(name, label, ftype);
        f.precision = precision;
        f.scale = scale;
        self.0.push(f);
        self
    }
    /// An address compound field and its components, as Salesforce lists them.
    fn address(mut self, prefix: &str, label: &str) -> B {
        let compound = format!("{prefix}Address");
        for (suffix, l, t, len) in [
            ("Street", "Street", "textarea", 255),
            ("City", "City", "string", 40),
            ("State", "State/Province", "string", 80),
            ("PostalCode", "Zip/Postal Code", "string", 20),
            ("Country", "Country", "string", 80),
            ("Latitude", "Latitude", "double", 0),
            ("Longitude", "Longitude", "double", 0),
            ("GeocodeAccuracy", "Geocode Accuracy", "picklist", 40),
        ] {
            let mut f = Field::new(&format!("{prefix}{suffix}"), &format!("{label} {l}"), t);
            if len > 0 {
                f.length = len;
            }
            if t == "double" {
                f.precision = 18;
                f.scale = 15;
            }
            if suffix == "GeocodeAccuracy" {
                f.picklist = ["Address", "NearAddress", "Block", "Street", "City", "Zip"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            }
            f.compound = Some(compound.clone());
            self.0.push(f);
        }
        self.0.push(Field::new(
            &compound,
            &format!("{label} Address"),
            "address",
        ));
        self
    }
    /// A custom geolocation field `{base}__c` and its `__s` components.
    fn location(mut self, base: &str, label: &str) -> B {
        let compound = format!("{base}__c");
        for part in ["Latitude", "Longitude"] {
            let mut f = Field::new(
                &format!("{base}__{part}__s"),
                &format!("{label} ({part})"),
                "double",
            );
            f.precision = 18;
            f.scale = 15;
            f.compound = Some(compound.clone());
            self.0.push(f);
        }
        let mut f = Field::new(&compound, label, "location");
        f.scale = 6;
        self.0.push(f);
        self
    }
    /// Id and IsDeleted first; created, modified and SystemModstamp last.
    fn audit(self, deleted: bool, modstamp: bool) -> Vec<Field> {
        let mut out = vec![Field::new("Id", "Record ID", "id")];
        if deleted {
            out.push(Field::new("IsDeleted", "Deleted", "boolean"));
        }
        out.extend(self.0);
        let mut tail = B(Vec::new())
            .f("CreatedDate", "Created Date", "datetime")
            .reference("CreatedById", "Created By ID", "User")
            .f("LastModifiedDate", "Last Modified Date", "datetime")
            .reference("LastModifiedById", "Last Modified By ID", "User")
            .0;
        if modstamp {
            tail.push(Field::new("SystemModstamp", "System Modstamp", "datetime"));
        }
        for f in tail.iter_mut() {
            f.nillable = false;
        }
        out.extend(tail);
        out
    }
}

pub const INDUSTRIES: &[&str] = &[
    "Agriculture",
    "Banking",
    "Education",
    "Energy",
    "Healthcare",
    "Manufacturing",
    "Retail",
    "Technology",
];
pub const ACCOUNT_TYPES: &[&str] = &[
    "Prospect",
    "Customer - Direct",
    "Customer - Channel",
    "Channel Partner / Reseller",
    "Other",
];
pub const TIERS: &[&str] = &["Bronze", "Silver", "Gold", "Platinum"];
pub const SEGMENTS: &[&str] = &["SMB", "Mid-Market", "Enterprise", "Public Sector"];
pub const LEAD_STATUS: &[&str] = &[
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
];
pub const LEAD_SOURCE: &[&str] = &["Web", "Phone Inquiry", "Partner Referral", "Trade Show"];
pub const RATINGS: &[&str] = &["Hot", "Warm", "Cold"];
pub const STAGES: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];
pub const INVOICE_STATUS: &[&str] = &["Draft", "Sent", "Paid", "Void"];
pub const TIME_ZONES: &[&str] = &[
    "America/Los_Angeles",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Tokyo",
];
/// How many custom fields Wide__c has: its full field list is longer than
/// a small `--max-query-length`.
pub const WIDE_FIELDS: usize = 600;

fn object(name: &str, label: &str, plural: &str, prefix: &str, fields: Vec<Field>) -> Object {
    Object {
        name: name.into(),
        label: label.into(),
        label_plural: plural.into(),
        key_prefix: prefix.into(),
        custom: name.ends_with("__c"),
        fields,
        queryable: true,
        filter_on: Vec::new(),
    }
}

/// The org's objects, in describeGlobal order.
pub fn objects() -> Vec<Object> {
    let account = B(Vec::new())
        .name_field("Name", "Account Name")
        .pick("Type", "Account Type", ACCOUNT_TYPES)
        .reference("ParentId", "Parent Account ID", "Account")
        .address("Billing", "Billing")
        .f("Phone", "Account Phone", "phone")
        .f("Website", "Website", "url")
        .pick("Industry", "Industry", INDUSTRIES)
        .num("AnnualRevenue", "Annual Revenue", "currency", 18, 0)
        .f("NumberOfEmployees", "Employees", "int")
        .text("Description", "Account Description", 32000)
        .reference("OwnerId", "Owner ID", "User")
        .pick("Tier__c", "Tier", TIERS)
        .num("Loyalty_Score__c", "Loyalty Score", "double", 18, 2)
        .f("Signup_Date__c", "Signup Date", "date")
        .f("Is_VIP__c", "VIP", "boolean")
        .multi("Segments__c", "Segments", SEGMENTS)
        .location("Location", "Location")
        .audit(true, true);
    let contact = B(Vec::new())
        .reference("AccountId", "Account ID", "Account")
        .person_name()
        .address("Mailing", "Mailing")
        .f("Phone", "Business Phone", "phone")
        .f("Email", "Email", "email")
        .f("Title", "Title", "string")
        .f("Birthdate", "Birthdate", "date")
        .f("HasOptedOutOfEmail", "Email Opt Out", "boolean")
        .reference("OwnerId", "Owner ID", "User")
        .audit(true, true);
    let lead = B(Vec::new())
        .person_name()
        .f("Company", "Company", "string")
        .f("Email", "Email", "email")
        .pick("Status", "Status", LEAD_STATUS)
        .pick("Rating", "Rating", RATINGS)
        .pick("LeadSource", "Lead Source", LEAD_SOURCE)
        .f("IsConverted", "Converted", "boolean")
        .num("AnnualRevenue", "Annual Revenue", "currency", 18, 0)
        .f("NumberOfEmployees", "Employees", "int")
        .reference("OwnerId", "Owner ID", "User")
        .audit(true, true);
    let opportunity = B(Vec::new())
        .reference("AccountId", "Account ID", "Account")
        // The contact of the primary contact role (API 46.0 and later; see
        // fixtures/salesforce/cumulusci/describe-Opportunity.json).
        .reference("ContactId", "Contact ID", "Contact")
        .name_field("Name", "Name")
        .pick("StageName", "Stage", STAGES)
        .num("Amount", "Amount", "currency", 18, 2)
        .num("Probability", "Probability (%)", "percent", 3, 0)
        .f("CloseDate", "Close Date", "date")
        .f("IsClosed", "Closed", "boolean")
        .f("IsWon", "Won", "boolean")
        .reference("OwnerId", "Owner ID", "User")
        .audit(true, true);
    // User has no IsDeleted: users are deactivated, never deleted.
    let user = B(Vec::new())
        .f("Username", "Username", "string")
        .person_name()
        .f("Email", "Email", "email")
        .f("IsActive", "Active", "boolean")
        .pick("TimeZoneSidKey", "Time Zone", TIME_ZONES)
        .audit(false, true);
    let invoice = B(Vec::new())
        .reference("OwnerId", "Owner ID", "User")
        .name_field("Name", "Invoice Number")
        .reference("Account__c", "Account", "Account")
        .num("Amount__c", "Amount", "currency", 16, 2)
        .pick("Status__c", "Status", INVOICE_STATUS)
        .f("Issued_On__c", "Issued On", "date")
        .f("Due_Time__c", "Due Time", "time")
        .f("Paid__c", "Paid", "boolean")
        .num("Tax_Rate__c", "Tax Rate", "percent", 5, 2)
        .num("Lines__c", "Lines", "double", 18, 0)
        .f("Portal_Url__c", "Portal URL", "url")
        .f("Billing_Email__c", "Billing Email", "email")
        .f("Billing_Phone__c", "Billing Phone", "phone")
        .text("Notes__c", "Notes", 255)
        .formula(
            "Days_Overdue__c",
            "Days Overdue",
            "double",
            "IF(Paid__c, 0, TODAY() - Issued_On__c)",
        )
        .audit(true, true);
    let mut wide = B(Vec::new())
        .reference("OwnerId", "Owner ID", "User")
        .name_field("Name", "Wide Name");
    for i in 1..=WIDE_FIELDS {
        let t = match i % 3 {
            0 => "double",
            1 => "string",
            _ => "boolean",
        };
        wide = wide.f(
            &format!("Wide_Field_{i:03}__c"),
            &format!("Wide Field {i:03}"),
            t,
        );
    }
    let wide = wide.audit(true, true);
    // Activities: records older than a year are archived (IsArchived),
    // and `query` leaves archived ones out (SOAP API guide, Task).
    let task = B(Vec::new())
        .reference("WhoId", "Name ID", "Contact")
        .reference("WhatId", "Related To ID", "Account")
        .f("Subject", "Subject", "string")
        .f("ActivityDate", "Due Date Only", "date")
        .pick(
            "Status",
            "Status",
            &["Not Started", "In Progress", "Completed"],
        )
        .pick("Priority", "Priority", &["High", "Normal", "Low"])
        .reference("OwnerId", "Assigned To ID", "User")
        .f("IsArchived", "Archived", "boolean")
        .audit(true, true);
    // Queryable only with a filter on one parent's Id (SOAP API guide,
    // ContentDocumentLink: "Implementation restriction").
    let content_link = B(Vec::new())
        .reference("LinkedEntityId", "Linked Entity ID", "Account")
        .reference("ContentDocumentId", "ContentDocument ID", "ContentDocument")
        .pick("ShareType", "Share Type", &["V", "C", "I"])
        .pick(
            "Visibility",
            "Visibility",
            &["AllUsers", "InternalUsers", "SharedUsers"],
        )
        .audit(true, true);
    // Files: Body is base64, which REST answers with the blob's URL and
    // Bulk API 2.0 refuses.
    let attachment = B(Vec::new())
        .reference("ParentId", "Parent ID", "Account")
        .f("Name", "File Name", "string")
        .f("ContentType", "Content Type", "string")
        .f("BodyLength", "Body Length", "int")
        .f("Body", "Body", "base64")
        .reference("OwnerId", "Owner ID", "User")
        .audit(true, true);
    // Change events are listed by describeGlobal but cannot be queried.
    let change_event = B(Vec::new())
        .f("Name", "Account Name", "string")
        .audit(false, false);
    // UserLogin has LastModifiedDate but neither SystemModstamp nor IsDeleted.
    let user_login = B(Vec::new())
        .reference("UserId", "User ID", "User")
        .f("IsFrozen", "Is Frozen", "boolean")
        .f("IsPasswordLocked", "Is Password Locked", "boolean")
        .audit(false, false);
    // History objects only have CreatedDate: rows are written once.
    let mut history = vec![
        Field::new("Id", "Account History ID", "id"),
        Field::new("IsDeleted", "Deleted", "boolean"),
    ];
    history.extend(
        B(Vec::new())
            .reference("AccountId", "Account ID", "Account")
            .reference("CreatedById", "Created By ID", "User")
            .f("CreatedDate", "Created Date", "datetime")
            .pick(
                "Field",
                "Changed Field",
                &["Name", "Industry", "Type", "Tier__c"],
            )
            .pick("DataType", "Data Type", &["Text", "Picklist"])
            .f("OldValue", "Old Value", "anyType")
            .f("NewValue", "New Value", "anyType")
            .0,
    );
    for f in history.iter_mut() {
        if f.name == "CreatedDate" || f.name == "CreatedById" {
            f.nillable = false;
        }
    }
    let mut content_link = object(
        "ContentDocumentLink",
        "Content Document Link",
        "Content Document Link",
        "06A",
        content_link,
    );
    content_link.filter_on = vec!["ContentDocumentId", "LinkedEntityId"];
    let mut change_event = object(
        "AccountChangeEvent",
        "Account Change Event",
        "Account Change Events",
        "1CE",
        change_event,
    );
    change_event.queryable = false;
    vec![
        object("Account", "Account", "Accounts", "001", account),
        change_event,
        object("Attachment", "Attachment", "Attachments", "00P", attachment),
        object(
            "AccountHistory",
            "Account History",
            "Account History",
            "017",
            history,
        ),
        object("Contact", "Contact", "Contacts", "003", contact),
        content_link,
        object("Invoice__c", "Invoice", "Invoices", "a01", invoice),
        object("Lead", "Lead", "Leads", "00Q", lead),
        object(
            "Opportunity",
            "Opportunity",
            "Opportunities",
            "006",
            opportunity,
        ),
        object("Task", "Task", "Tasks", "00T", task),
        object("User", "User", "Users", "005", user),
        object("UserLogin", "User Login", "User Logins", "06c", user_login),
        object("Wide__c", "Wide", "Wides", "a02", wide),
    ]
}

/// A field added through the admin API.
pub fn custom_field(body: &Value) -> Result<Field, String> {
    let name = body["name"].as_str().ok_or("name missing")?;
    let ftype = body["type"].as_str().unwrap_or("string");
    const TYPES: &[&str] = &[
        "string",
        "picklist",
        "multipicklist",
        "email",
        "phone",
        "url",
        "textarea",
        "boolean",
        "int",
        "double",
        "currency",
        "percent",
        "date",
        "datetime",
        "time",
    ];
    if !TYPES.contains(&ftype) {
        return Err(format!("type {ftype:?}: one of {TYPES:?}"));
    }
    let mut f = Field::new(name, body["label"].as_str().unwrap_or(name), ftype);
    f.custom = true;
    if let Some(vals) = body["picklistValues"].as_array() {
        f.picklist = vals
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
    }
    Ok(f)
}
